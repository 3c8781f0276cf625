"""Electrolyte volume of slab boxes (analysis/volume.py) and g(r) normalised by it (analysis/rdf.py)."""

import numpy as np
import pytest

from spemd.analysis.rdf import RDF
from spemd.analysis.volume import (ElectrolyteVolume, VDW_RADIUS_NM, covered_length, film_shell_volumes_nm3,
                                   slab_atoms)
from spemd.errors import InputError
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


def test_covered_length_on_the_circle():
    assert covered_length([1.0, 2.0], [3.0, 2.5], 10.0) == pytest.approx(2.0)
    # split by the periodic boundary: [9, 11) is [9, 10) + [0, 1)
    assert covered_length([9.0, 0.2], [11.0, 0.5], 10.0) == pytest.approx(2.0)
    assert covered_length([-0.5, 3.0], [0.5, 4.0], 10.0) == pytest.approx(2.0)
    assert covered_length([0.0], [12.0], 10.0) == pytest.approx(10.0)


@pytest.mark.parametrize("shift", [0.0, 5.9])  # 5.9: the slab straddles z = 0 after wrapping
def test_electrolyte_volume_and_density(shift):
    u, n_slab = _slab_box(n_gas=500, n_frames=2, shift_nm=shift)
    slab = slab_atoms(u)
    assert len(slab) == n_slab
    ev = ElectrolyteVolume(slab, u.select_atoms("resname GAS")).run()
    h = L_Z - (SLAB_Z[1] - SLAB_Z[0] + 2 * VDW_RADIUS_NM["C"])  # 5.46 nm
    assert ev.results.thickness_nm == pytest.approx([h, h], abs=1e-5)
    assert ev.results.mean_volume_nm3 == pytest.approx(L_XY**2 * h, rel=1e-5)
    assert ev.results.mean_density_g_cm3 == pytest.approx(density_g_per_cm3(500 * 1.008, L_XY**2 * h), rel=1e-5)


def test_unknown_slab_element_is_named():
    u, _ = _slab_box(n_gas=10, n_frames=1)
    u.atoms[0].element = "Xe"
    with pytest.raises(InputError, match="Xe"):
        ElectrolyteVolume(slab_atoms(u), u.select_atoms("resname GAS"))


def test_film_shells_integrate_phi():
    h = 2.0
    e = np.linspace(0, 3.0, 31)
    fine = np.linspace(0, 3.0, 30 * 2000 + 1)  # midpoint rule on 2000 sub-bins per bin
    r = 0.5 * (fine[1:] + fine[:-1])
    phi = np.where(r <= h, 1 - r / (2 * h), h / (2 * r))
    numeric = (phi * 4 * np.pi * r**2 * np.diff(fine)).reshape(30, 2000).sum(axis=1)
    assert film_shell_volumes_nm3(e, h) == pytest.approx(numeric, rel=1e-6)
    assert film_shell_volumes_nm3(e, None) == pytest.approx(4 / 3 * np.pi * np.diff(e**3))


def test_ideal_gas_outside_a_slab_has_g_one_with_the_electrolyte_volume():
    u, _ = _slab_box()
    gas = u.select_atoms("resname GAS")
    ev = ElectrolyteVolume(slab_atoms(u), gas)
    kw = dict(r_max_nm=0.8, bins=16, exclude_same=None)
    with_e = RDF(gas, gas, electrolyte=ev, **kw).run()
    box = RDF(gas, gas, **kw).run()
    tail = (with_e.results.bins_nm > 0.6) & (with_e.results.bins_nm < 0.8)
    assert np.mean(with_e.results.rdf[tail]) == pytest.approx(1.0, abs=0.02)
    assert np.all(np.abs(with_e.results.rdf[4:] - 1.0) < 0.04)
    # box-volume normalisation: V_box / V_e times the film's shell fraction -- ~1.03 in 0.6-0.8 nm here
    h = L_Z - (SLAB_Z[1] - SLAB_Z[0] + 2 * VDW_RADIUS_NM["C"])
    e = box.results.edges_nm
    expected = (L_Z / h) * film_shell_volumes_nm3(e, h) / film_shell_volumes_nm3(e, None)
    assert np.mean(box.results.rdf[tail]) == pytest.approx(np.mean(expected[tail]), abs=0.02)
    assert np.mean(box.results.rdf[tail]) > 1.025
    assert "electrolyte volume" in with_e.results.normalisation
    assert with_e.results.normalisation_volume_nm3 == pytest.approx(L_XY**2 * h, rel=1e-5)


def test_carrier_density_uses_the_electrolyte_volume():
    from spemd.analysis.conductivity import Conductivity

    u, _ = _slab_box(n_gas=200, n_frames=30, seed=3)
    gas = u.select_atoms("resname GAS")
    ev = ElectrolyteVolume(slab_atoms(u), gas)
    kw = dict(temperature_K=353.0, anion_compound="atoms")
    with_e = Conductivity(gas[:100], gas[100:], electrolyte=ev, **kw).run()
    box = Conductivity(gas[:100], gas[100:], **kw).run()
    h = L_Z - (SLAB_Z[1] - SLAB_Z[0] + 2 * VDW_RADIUS_NM["C"])
    ratio = with_e.results.nernst_einstein["sigma_S_per_cm"] / box.results.nernst_einstein["sigma_S_per_cm"]
    assert ratio == pytest.approx(L_Z / h, rel=1e-6)  # 9.9 % more carriers per volume than the box suggests
    assert with_e.results.nernst_einstein["volume_nm3"] == pytest.approx(L_XY**2 * h, rel=1e-5)


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
