"""The electrolyte of slab boxes (analysis/volume.py) and the lateral g(r) reference of slab boxes (analysis/rdf.py)."""

import numpy as np
import pytest

from spemd.analysis.rdf import RDF
from spemd.analysis.volume import (REACH_NM, ElectrolyteVolume, film_centre_density_g_cm3, film_gap,
                                   occupied_volume_nm3, slab_atoms)
from spemd.errors import ConfigError, InputError
from spemd.slab import FILM_CENTRE_CLEARANCE_NM, VDW_RADIUS_NM
from spemd.units import density_g_per_cm3

L_XY, L_Z = 4.0, 6.0  # nm
SLAB_Z = (0.2, 0.4)  # two carbon layers (nm)


def _slab_box(n_gas=2000, n_frames=6, seed=0, shift_nm=0.0):
    """Ideal gas of points filling the box outside a fake two-layer carbon slab (z-shifted by shift_nm)."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(0.1, L_XY, 0.4), np.arange(0.1, L_XY, 0.4))
    layer = np.column_stack([gx.ravel(), gy.ravel()])
    slab = np.vstack([np.column_stack([layer, np.full(len(layer), z)]) for z in SLAB_Z])
    n_slab = len(slab)
    r_c = VDW_RADIUS_NM["C"]
    lo, hi = SLAB_Z[1] + r_c, SLAB_Z[0] - r_c + L_Z
    frames = []
    for _ in range(n_frames):
        gas = np.column_stack([rng.uniform(0, L_XY, n_gas), rng.uniform(0, L_XY, n_gas), rng.uniform(lo, hi, n_gas)])
        xyz = np.vstack([slab, gas])
        xyz[:, 2] = np.mod(xyz[:, 2] + shift_nm, L_Z)
        frames.append(10.0 * xyz)  # MDAnalysis works in Angstrom
    n = n_slab + n_gas
    u = mda.Universe.empty(n, n_residues=2, atom_resindex=np.r_[np.zeros(n_slab, int), np.ones(n_gas, int)],
                           trajectory=False)
    u.add_TopologyAttr("resname", ["BTC", "GAS"])
    u.add_TopologyAttr("name", ["C"] * n_slab + ["X"] * n_gas)
    u.add_TopologyAttr("elements", ["C"] * n_slab + ["H"] * n_gas)
    u.add_TopologyAttr("masses", np.r_[np.full(n_slab, 12.011), np.full(n_gas, 1.008)])
    u.add_TopologyAttr("resid", [1, 2])
    dims = np.array([10 * L_XY, 10 * L_XY, 10 * L_Z, 90, 90, 90], dtype=np.float32)
    u.load_new(np.array(frames, dtype=np.float32), format=MemoryReader, dimensions=dims)
    return u, n_slab


def test_film_gap_on_the_circle():
    assert film_gap([0.2, 0.4], 6.0) == pytest.approx((0.4, 6.2))
    # split by the periodic boundary: the film is the gap between 0.3 and 5.8 either way
    assert film_gap([5.8, 0.3, 6.1], 6.0) == pytest.approx((0.3, 5.8))
    assert film_gap([-0.2, 0.3], 6.0) == pytest.approx((0.3, 5.8))


@pytest.mark.parametrize("shift", [0.0, 5.9])  # 5.9: the slab straddles z = 0 after wrapping
def test_film_centre_density_counts_the_band_only(shift):
    u, n_slab = _slab_box(n_gas=2000, n_frames=4, shift_nm=shift)
    gas = u.select_atoms("resname GAS")
    ev = ElectrolyteVolume(slab_atoms(u), gas, max_volume_frames=1).run()
    band_lo, band_hi = SLAB_Z[1] + FILM_CENTRE_CLEARANCE_NM, SLAB_Z[0] + L_Z - FILM_CENTRE_CLEARANCE_NM
    by_hand = []
    for ts in u.trajectory:
        z = np.mod(gas.positions[:, 2] / 10.0 - shift, L_Z)
        n = np.count_nonzero((z >= band_lo) & (z < band_hi))
        by_hand.append(density_g_per_cm3(n * 1.008, L_XY**2 * (band_hi - band_lo)))
    assert ev.results.film_centre_density_g_cm3 == pytest.approx(by_hand, rel=1e-9)
    # the gas is uniform between the slab's vdW surfaces: the band holds the same density (binomial 1 %)
    lo, hi = SLAB_Z[1] + VDW_RADIUS_NM["C"], SLAB_Z[0] - VDW_RADIUS_NM["C"] + L_Z
    uniform = density_g_per_cm3(2000 * 1.008, L_XY**2 * (hi - lo))
    assert ev.results.mean_film_centre_density_g_cm3 == pytest.approx(uniform, rel=0.03)


def test_film_centre_salt_fraction_and_polymer_density_by_hand():
    """Salt held at the slab's faces: the band's salt fraction and polymer density counted by hand."""
    u, n_slab = _slab_box(n_gas=2000, n_frames=3, seed=5)
    gas = u.select_atoms("resname GAS")
    salt = gas[:400]
    salt.masses = np.full(len(salt), 23.0)
    coords = u.trajectory.coordinate_array  # Angstrom, (frames, atoms, 3)
    rng = np.random.default_rng(1)
    # 300 salt atoms in a layer 0.1-0.5 nm above the slab's top (outside the band), 100 anywhere
    coords[:, salt.indices[:300], 2] = 10.0 * (SLAB_Z[1] + rng.uniform(0.1, 0.5, (coords.shape[0], 300)))
    ev = ElectrolyteVolume(slab_atoms(u), gas, salt=salt, max_volume_frames=1).run()
    band_lo, band_hi = SLAB_Z[1] + FILM_CENTRE_CLEARANCE_NM, SLAB_Z[0] + L_Z - FILM_CENTRE_CLEARANCE_NM
    w_hand, rho_p_hand = [], []
    for ts in u.trajectory:
        z = gas.positions[:, 2] / 10.0
        inside = (z >= band_lo) & (z < band_hi)
        m = gas.masses[inside].sum()
        m_salt = gas.masses[inside & np.isin(gas.indices, salt.indices)].sum()
        w_hand.append(m_salt / m)
        rho_p_hand.append(density_g_per_cm3(m - m_salt, L_XY**2 * (band_hi - band_lo)))
    r = ev.results
    assert r.film_centre_salt_mass_fraction == pytest.approx(w_hand, rel=1e-9)
    assert r.film_centre_polymer_density_g_cm3 == pytest.approx(rho_p_hand, rel=1e-9)
    assert r.salt_mass_fraction == pytest.approx(400 * 23.0 / (400 * 23.0 + 1600 * 1.008), rel=1e-12)
    # the band holds the uniformly spread 100 salt atoms only: their share, not the whole box's 0.85
    assert r.mean_film_centre_salt_mass_fraction == pytest.approx(100 * 23.0 / (100 * 23.0 + 1600 * 1.008), rel=0.05)
    with pytest.raises(InputError, match="not in the electrolyte group"):
        ElectrolyteVolume(slab_atoms(u), gas[400:], salt=salt)


def test_film_without_a_centre_band_is_refused():
    with pytest.raises(InputError, match="FILM_CENTRE_CLEARANCE_NM"):
        film_centre_density_g_cm3([1.0], [1.0], [0.0, 0.9], 1.0, 2.0)


def _lattice(L, spacing):
    axes = [(np.arange(int(round(length / spacing))) + 0.5) * spacing for length in L]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def test_occupied_volume_of_a_dense_bulk_is_the_box():
    L = np.array([3.0, 3.0, 3.0])
    pos = _lattice(L, 0.3)  # farthest point from a lattice site: 0.26 nm < REACH_NM
    assert occupied_volume_nm3(pos, L, np.full(len(pos), 0.15), np.ones(len(pos), bool)) == pytest.approx(27.0)


def test_occupied_volume_splits_at_the_power_plane():
    L = np.array([0.6, 0.6, 1.2])
    pos = _lattice(L, 0.3)
    is_e = pos[:, 2] > 0.6  # upper half electrolyte, lower half framework: equal radii, midplanes z = 0 and 0.6
    assert occupied_volume_nm3(pos, L, np.full(len(pos), 0.15), is_e, spacing_nm=0.05) == pytest.approx(0.216)
    # a larger framework radius moves the plane into the electrolyte: |x-a|^2 - Ra^2 = |x-b|^2 - Rb^2
    # between layers 0.3 nm apart shifts it by (Ra^2 - Rb^2) / (2 * 0.3) = 0.0292 nm on each face (to within
    # half a grid spacing per face)
    radii = np.where(is_e, 0.15, 0.2)
    shift = (0.2**2 - 0.15**2) / 0.6
    assert occupied_volume_nm3(pos, L, radii, is_e, spacing_nm=0.01) == pytest.approx(0.36 * (0.6 - 2 * shift),
                                                                                      abs=0.36 * 0.01)


def test_occupied_volume_stops_at_the_reach_in_an_empty_pore():
    L = np.array([3.0, 3.0, 3.0])
    v = occupied_volume_nm3([[1.5, 1.5, 1.5]], L, [0.12], [True], spacing_nm=0.02)
    assert v == pytest.approx(4.0 / 3.0 * np.pi * REACH_NM**3, rel=0.01)


def test_occupied_volume_equals_a_brute_force_power_diagram():
    # every grid point against every atom and its periodic images: owner = least |x - x_a|^2 - R_a^2, counted
    # when it is electrolyte and within REACH_NM; random atoms with mixed radii, a quarter of them framework,
    # in a box whose short edge (0.9 nm) is close to twice the stamping radius
    rng = np.random.default_rng(7)
    L = np.array([0.9, 1.3, 1.7])
    pos = rng.uniform(0, 1, (40, 3)) * L
    radii = rng.choice([0.102, 0.12, 0.152, 0.18, 0.2], 40)
    is_e = rng.uniform(size=40) > 0.25
    n = np.ceil(L / 0.05).astype(int)
    grid = np.stack(np.meshgrid(*[(np.arange(m) + 0.5) * x / m for m, x in zip(n, L)], indexing="ij"), -1).reshape(-1, 3)
    d = grid[:, None, :] - pos[None, :, :]
    d2 = np.sum((d - L * np.round(d / L)) ** 2, axis=-1)
    owner = np.argmin(d2 - radii**2, axis=1)
    near = d2[np.arange(len(grid)), owner] <= REACH_NM**2
    expected = np.count_nonzero(is_e[owner] & near) * np.prod(L / n)
    assert occupied_volume_nm3(pos, L, radii, is_e, spacing_nm=0.05) == pytest.approx(expected, rel=1e-12)


def test_unknown_element_is_named():
    u, _ = _slab_box(n_gas=10, n_frames=1)
    u.atoms[0].element = "Xe"
    with pytest.raises(InputError, match="Xe"):
        ElectrolyteVolume(slab_atoms(u), u.select_atoms("resname GAS"))


def test_ideal_gas_outside_a_slab_has_g_one_with_the_lateral_reference():
    u, _ = _slab_box()
    gas = u.select_atoms("resname GAS")
    kw = dict(r_max_nm=0.8, bins=16, exclude_same=None)
    lateral = RDF(gas, gas, normalisation="lateral", **kw).run()
    box = RDF(gas, gas, **kw).run()
    tail = (lateral.results.bins_nm > 0.6) & (lateral.results.bins_nm < 0.8)
    assert np.mean(lateral.results.rdf[tail]) == pytest.approx(1.0, abs=0.02)
    assert np.all(np.abs(lateral.results.rdf[4:] - 1.0) < 0.04)
    # the box volume counts the slab as space the gas could be in: g ~1.03 and rising at 0.6-0.8 nm here
    assert np.mean(box.results.rdf[tail]) > 1.025
    assert lateral.results.normalisation.startswith("lateral")


def test_lateral_reference_equals_the_volume_one_in_a_plain_box():
    u, n_slab = _slab_box(n_gas=1500, n_frames=3, seed=5)
    gas = u.select_atoms("resname GAS")
    # fill the whole box uniformly (no slab region left empty): the two references must agree
    rng = np.random.default_rng(1)
    for ts in u.trajectory:
        ts.positions[n_slab:] = rng.uniform(0, 1, (len(gas), 3)) * ts.dimensions[:3]
    kw = dict(r_max_nm=1.0, bins=10, exclude_same=None)
    lateral = RDF(gas, gas, normalisation="lateral", **kw).run()
    volume = RDF(gas, gas, **kw).run()
    assert lateral.results.rdf == pytest.approx(volume.results.rdf, rel=0.01)


def test_lateral_reference_excludes_the_same_pairs_as_the_count():
    u, _ = _slab_box(n_gas=400, n_frames=2)
    gas = u.select_atoms("resname GAS")
    with pytest.raises(ConfigError, match="normalisation"):
        RDF(gas, gas, normalisation="film")
    with pytest.raises(ConfigError, match="accessible_volume_nm3"):
        RDF(gas, gas, normalisation="lateral", accessible_volume_nm3=10.0)
    same = RDF(gas, gas, r_max_nm=0.8, bins=8, exclude_same="residue", normalisation="lateral")
    with pytest.raises(InputError, match="no pairs left"):
        same.run()  # one residue: every pair excluded, in the count and in the reference alike


def test_carrier_density_uses_the_given_volume():
    from spemd.analysis.conductivity import Conductivity

    u, _ = _slab_box(n_gas=200, n_frames=30, seed=3)
    gas = u.select_atoms("resname GAS")
    kw = dict(temperature_K=353.0, anion_compound="atoms")
    with_e = Conductivity(gas[:100], gas[100:], carrier_volume_nm3=50.0, **kw).run()
    box = Conductivity(gas[:100], gas[100:], **kw).run()
    ratio = with_e.results.nernst_einstein["sigma_S_per_cm"] / box.results.nernst_einstein["sigma_S_per_cm"]
    assert ratio == pytest.approx(L_XY**2 * L_Z / 50.0, rel=1e-6)
    assert with_e.results.nernst_einstein["volume_nm3"] == pytest.approx(50.0)


def test_additive_density_reference_for_a_salt_box():
    from spemd.analysis.paper import peo_melt_density_g_cm3
    from spemd.analysis.volume import NATFSI_FORMULA_VOLUME_NM3, electrolyte_reference_density

    melt = peo_melt_density_g_cm3(353.0)["density_g_cm3"]  # 1.078 g/cm3 (Rodgers 1993)
    assert electrolyte_reference_density(353.0, 0.0, 303.14)["density_g_cm3"] == pytest.approx(melt)
    # EO:Na 20 with 50-EO chains: 25.2 wt% NaTFSI; salt 303.14 amu in 0.2364 nm^3 -> 2.129 g/cm3
    assert NATFSI_FORMULA_VOLUME_NM3 == pytest.approx(0.23644, abs=1e-5)
    ref = electrolyte_reference_density(353.0, 0.252, 303.14)
    rho_salt = 303.14 / 6.02214076e23 / (NATFSI_FORMULA_VOLUME_NM3 * 1e-21)
    assert ref["density_g_cm3"] == pytest.approx(1.0 / (0.748 / melt + 0.252 / rho_salt), rel=1e-9)
    assert ref["density_g_cm3"] == pytest.approx(1.231, abs=0.002)
    assert ref["verified"] is False and "Slattery" in ref["source"] and "Rodgers" in ref["source"]
    with pytest.raises(InputError, match="salt_mass_fraction"):
        electrolyte_reference_density(353.0, 1.2, 303.14)
