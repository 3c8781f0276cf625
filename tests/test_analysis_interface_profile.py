import numpy as np
import pytest

from spemd.analysis.interface_profile import InterfaceProfile
from spemd.analysis.synthetic import _universe
from spemd.slab import face_distance_nm

BOX = (3.0, 3.0, 6.0)  # slab atom centres span z 0..2 nm; the film is 2..6 nm, half thickness 2 nm
AREA = BOX[0] * BOX[1]


def _slab_universe(particles_nm):
    """`particles_nm` (F, N, 3) of resname NA, beside a fixed slab (resname BTC) at z = 0 and 2 nm."""
    F, N, _ = particles_nm.shape
    slab = np.array([(x, y, z) for x in (0.5, 1.5, 2.5) for y in (0.5, 1.5, 2.5) for z in (0.0, 1.0, 2.0)])
    coords = np.concatenate([np.tile(slab, (F, 1, 1)), particles_nm], axis=1)
    n_slab = len(slab)
    return _universe(n_slab + N, coords, BOX, 1.0, resnames=["BTC"] * n_slab + ["NA"] * N,
                     names=["C1"] * n_slab + ["NA"] * N)


def _uniform_film(rng, F, N):
    return np.c_[rng.random((F * N, 2)) * 3.0, 2.0 + rng.random(F * N) * 4.0].reshape(F, N, 3)


def _profile(u, **kw):
    return InterfaceProfile({"Na": u.select_atoms("resname NA")}, u.select_atoms("resname BTC"), **kw).run().results


def test_ideal_gas_is_flat_with_no_excess():
    rng = np.random.default_rng(3)
    F, N = 200, 200
    r = _profile(_slab_universe(_uniform_film(rng, F, N)))
    rho = N / (AREA * 4.0)  # the film's number density
    film = (r.d_nm > 0.05) & (r.d_nm < 1.95)
    assert np.all(r.density_nm3["Na"][r.d_nm < -0.05] == 0)  # nothing inside the slab's extent
    dev = (r.density_nm3["Na"][film] - rho) / r.density_sem_nm3["Na"][film]
    assert np.mean(r.density_nm3["Na"][film]) == pytest.approx(rho, rel=0.01)
    assert np.sqrt(np.mean(dev ** 2)) < 2.0  # flat within its errors
    ex = r.excess["Na"]
    assert ex["bulk_density_nm3"] == pytest.approx(rho, rel=0.02)
    assert abs(ex["gamma_per_nm2"]) < 3 * ex["gamma_sem_per_nm2"]
    assert ex["gamma_sem_per_nm2"] < 0.05 * rho  # the test has power: an excess of 5 % of a 1 nm layer is seen


def test_known_adsorbed_layer_gives_its_excess():
    # the uniform gas plus K ions held 0.325 nm above the top face and K more 0.525 nm below the bottom face
    rng = np.random.default_rng(4)
    F, N, K = 100, 200, 9
    gas = _uniform_film(rng, F, N)
    top = np.c_[rng.random((F * K, 2)) * 3.0, np.full(F * K, 2.325)].reshape(F, K, 3)
    bottom = np.c_[rng.random((F * K, 2)) * 3.0, np.full(F * K, 5.475)].reshape(F, K, 3)
    r = _profile(_slab_universe(np.concatenate([gas, top, bottom], axis=1)))
    ex = r.excess["Na"]
    assert ex["gamma_per_nm2"] == pytest.approx(2 * K / (2 * AREA), abs=3 * ex["gamma_sem_per_nm2"] + 1e-9)
    peak = r.density_nm3["Na"][np.argmin(np.abs(r.d_nm - 0.325))]
    assert peak == pytest.approx(N / (AREA * 4.0) + K / (2 * AREA * 0.05), rel=0.1)


def test_thin_film_has_no_excess_with_reason():
    rng = np.random.default_rng(5)
    r = _profile(_slab_universe(_uniform_film(rng, 20, 50)), layer_nm=2.5)
    assert r.excess["Na"]["gamma_per_nm2"] is None
    assert "half thickness" in r.excess_reason


def test_face_distance_by_hand_across_the_periodic_boundary():
    # slab atom centres at z 8.8-10.2 nm in a 12 nm box: the film runs from 10.2 over the boundary to 20.8 (= 8.8)
    d = face_distance_nm([0.5, 2.0, 4.9, 9.5, 9.9, 10.5], [8.8, 9.0, 10.0, 10.2], 12.0)
    np.testing.assert_allclose(d, [2.3, 3.8, 3.9, -0.7, -0.3, 0.3], atol=1e-12)
