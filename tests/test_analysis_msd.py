import numpy as np
import pytest
from MDAnalysis.analysis.msd import EinsteinMSD

from spemd.analysis.msd import MSD, combine_estimates, finite_size_correction, msd_fft, yeh_hummer_correction_nm2_per_ps
from spemd.analysis.synthetic import brownian_positions, brownian_universe, electrolyte_universe
from spemd.errors import InputError
from spemd.units import BOLTZMANN_J_PER_K


def _direct_msd(x):
    T = len(x)
    return np.array([0.0] + [np.mean(np.sum((x[m:] - x[:-m]) ** 2, axis=-1)) for m in range(1, T)])


def test_fft_msd_equals_direct_sum():
    x = brownian_positions(7, 50, 1e-2, 1.0, (3, 3, 3), seed=3)
    np.testing.assert_allclose(msd_fft(x), _direct_msd(x), rtol=1e-10, atol=1e-12)


def test_equals_einstein_msd_fft_and_unwrapping_is_exact():
    pytest.importorskip("tidynamics")
    wrapped = brownian_universe(n_particles=60, n_frames=120, D_nm2_per_ps=5e-3, seed=5, wrap=True)
    unwrapped = brownian_universe(n_particles=60, n_frames=120, D_nm2_per_ps=5e-3, seed=5, wrap=False)
    ours = MSD(wrapped.atoms).run().results  # unwraps itself
    ref = EinsteinMSD(unwrapped.atoms, msd_type="xyz", fft=True).run().results
    np.testing.assert_allclose(ours.msd_nm2[1:] * 100.0, ref.timeseries[1:], rtol=1e-6)  # A^2 vs nm^2
    assert ours.max_step_fraction < 0.5 and ours.unwrap_precondition_ok


def test_residue_centres_of_mass_are_unwrapped_and_whole():
    u, cat, an = electrolyte_universe(n_pairs=10, n_frames=60, seed=2, wrap=True)
    r = MSD(u.select_atoms("resname TFS"), compound="residues").run().results
    np.testing.assert_allclose(r.msd_nm2, msd_fft(an), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(r.positions_nm - r.positions_nm[0], an - an[0], atol=1e-4)


def test_cm2_per_s_conversion_and_window_reporting():
    u = brownian_universe(n_particles=200, n_frames=200, D_nm2_per_ps=1e-3, seed=1)
    r = MSD(u.atoms, fit_start_fraction=0.2, fit_end_fraction=0.6).run().results
    assert r.diffusive and r.D_cm2_per_s == pytest.approx(r.D_nm2_per_ps * 1e-2)
    assert r.D_sigma_cm2_per_s == pytest.approx(r.D_sigma_nm2_per_ps * 1e-2)
    # Brownian: the window starts at the start of the search range and ends at its end
    assert r.fit_window_ps[0] == pytest.approx(0.2 * 199, abs=1) and r.fit_window_ps[1] == pytest.approx(0.6 * 199, abs=1)
    assert "GLS" in r.uncertainty_method


def test_too_few_frames_and_unequal_spacing_raise():
    u = brownian_universe(n_particles=5, n_frames=3, seed=0)
    with pytest.raises(InputError, match="MSD fit window: 3 frames"):
        MSD(u.atoms).run()
    u = brownian_universe(n_particles=5, n_frames=30, seed=0)
    with pytest.raises(InputError, match="not equally spaced"):
        MSD(u.atoms).run(frames=[0, 1, 2, 4, 5, 6, 8, 9, 10, 11])
    with pytest.raises(InputError, match="empty atom group"):
        MSD(u.select_atoms("name NOPE"))


def test_combine_estimates():
    c = combine_estimates([1.0, 2.0], [1.0, 1.0])
    assert c["mean"] == pytest.approx(1.5)
    assert c["sigma"] == pytest.approx(1 / np.sqrt(2))  # Birge ratio 0.707 < 1: not scaled
    c = combine_estimates([1.0, 3.0], [0.1, 0.1])
    birge = np.sqrt(((1 - 2) ** 2 + (3 - 2) ** 2) / 0.01 / 1)
    assert c["sigma"] == pytest.approx(0.1 / np.sqrt(2) * birge)
    c = combine_estimates([1.0, 2.0, 6.0], [np.nan, 1.0, 1.0])
    assert c["mean"] == pytest.approx(3.0) and c["sigma"] == pytest.approx(np.std([1, 2, 6], ddof=1) / np.sqrt(3))


def test_yeh_hummer_hand_formula():
    corr = yeh_hummer_correction_nm2_per_ps(5.0, 1e-3, 300.0)
    hand_m2_s = BOLTZMANN_J_PER_K * 300.0 * 2.837297 / (6 * np.pi * 1e-3 * 5e-9)
    assert corr == pytest.approx(hand_m2_s * 1e18 / 1e12)




def test_finite_size_correction_only_for_cubic_boxes():
    cub = finite_size_correction(1e-3, [5.0, 5.0, 5.0], 1e-3, 300.0)
    assert cub["D_corrected_nm2_per_ps"] == pytest.approx(1e-3 + yeh_hummer_correction_nm2_per_ps(5.0, 1e-3, 300.0))
    slab = finite_size_correction(1e-3, [5.0, 5.0, 15.0], 1e-3, 300.0)
    assert np.isnan(slab["D_corrected_nm2_per_ps"]) and "not cubic" in slab["finite_size_correction"]
    u = brownian_universe(n_particles=20, n_frames=60, seed=1, box_nm=(3.0, 3.0, 9.0))
    r = MSD(u.atoms, viscosity_Pa_s=1e-3, temperature_K=300.0).run().results
    assert "Kikugawa" in r.finite_size_correction and np.isnan(r.D_corrected_cm2_per_s)
