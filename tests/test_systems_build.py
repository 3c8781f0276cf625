"""Builders: molecules (geometry, naming) and packed boxes (composition, charge, overlaps, errors)."""

import json

import numpy as np
import openmm.app as app
import pytest
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from spemd.forcefields.parametrise import create_system
from spemd.errors import BuildError, ConfigError
from spemd.slab import MOF_RESIDUES
from spemd.systems import build, molecules

BUILD = {"start_density_g_cm3": 0.5, "packing_tolerance_nm": 0.2}
FF = {"charge_scale": 0.8, "nonbonded_cutoff_nm": 0.7, "hydrogen_mass_amu": 1.5}


def _dihedral(p0, p1, p2, p3):
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return np.degrees(np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w)))


def test_peo_chain_names_geometry_and_coil():
    n = 12
    mol = molecules.peo_chain(n, np.random.default_rng(4))
    res = [r.name for r in mol.topology.residues()]
    assert res == ["PEH"] + ["PEM"] * n + ["PET"]
    assert mol.topology.getNumAtoms() == 7 * n + 9
    assert mol.topology.getNumBonds() == 7 * n + 8
    assert [a.name for a in list(mol.topology.residues())[1].atoms()] == ["C1", "C2", "O1", "H11", "H12", "H21", "H22"]
    xyz = mol.positions_nm
    lengths = {frozenset((a.element.symbol, b.element.symbol)): np.linalg.norm(xyz[a.index] - xyz[b.index]) for a, b in mol.topology.bonds()}
    assert lengths[frozenset(("C", "O"))] == pytest.approx(0.141, abs=1e-6)
    assert lengths[frozenset(("C", "H"))] == pytest.approx(0.109, abs=1e-6)
    # O-C-C-O torsions: mixture of gauche and trans, not an all-trans rod
    heavy = [a.index for a in mol.topology.atoms() if a.element.symbol != "H"]
    occo = [_dihedral(*xyz[heavy[i : i + 4]]) for i in range(1, len(heavy) - 3, 3)]
    gauche = sum(abs(abs(t) - 65) < 35 for t in occo)
    assert 0 < gauche < len(occo)
    contour = (n + 1) * (0.141 * 2 + 0.1529) * 0.83
    assert np.linalg.norm(xyz[heavy[0]] - xyz[heavy[-1]]) < 0.8 * contour
    d_min = build.min_nonbonded_distance_nm(mol.topology, xyz, np.full(3, 100.0))
    assert d_min >= molecules.CLASH_ANY_NM


def test_tfsi_relaxed_geometry_and_names():
    mol = molecules.tfsi()
    names = [a.name for a in mol.topology.atoms()]
    assert names == ["N1", "S1", "S2", "O1", "O2", "O3", "O4", "C1", "C2", "F1", "F2", "F3", "F4", "F5", "F6"]
    xyz = mol.positions_nm
    eq = {frozenset("NS"): 0.157, frozenset("SO"): 0.1437, frozenset("CS"): 0.1818, frozenset("CF"): 0.1323}
    for a, b in mol.topology.bonds():
        key = frozenset((a.element.symbol, b.element.symbol))
        assert np.linalg.norm(xyz[a.index] - xyz[b.index]) == pytest.approx(eq[key], abs=0.006)
    # z-matrix values were 0.170 (S-N) and 0.1443 (S-O): the relaxation moved S-N to the force field's
    s1n = np.linalg.norm(xyz[0] - xyz[1])
    assert abs(s1n - 0.157) < 0.003


def _charges(topology, ff):
    system, info = create_system(topology, ff)
    nb = [f for f in system.getForces() if f.__class__.__name__ == "NonbondedForce"][0]
    return np.array([nb.getParticleParameters(i)[0]._value for i in range(system.getNumParticles())])


def test_plain_box(tmp_path):
    spec = {"eo_per_chain": 4, "chains": 3, "eo_per_na": 5}
    rec = build.build_box("tiny", spec, BUILD, 11, tmp_path, 0.7)
    # 12 EO / 5 -> round(2.4) = 2 pairs
    assert rec["counts"]["na"] == rec["counts"]["tfsi"] == 2
    assert rec["counts"]["peo_chains"] == 3 and rec["counts"]["atoms"] == 3 * (7 * 4 + 9) + 2 * 16
    text = (tmp_path / "box.pdb").read_text()
    assert any(line.startswith("CRYST1") for line in text.splitlines())
    assert "CONECT" in text
    pdb = app.PDBFile(str(tmp_path / "box.pdb"))
    assert pdb.topology.getNumBonds() == 3 * (7 * 4 + 8) + 2 * 14
    assert {a.element.symbol for a in pdb.topology.atoms()} == {"C", "H", "O", "N", "S", "F", "Na"}
    box = np.diag(pdb.topology.getPeriodicBoxVectors().value_in_unit(pdb.topology.getPeriodicBoxVectors().unit))
    mass = sum(a.element.mass._value for a in pdb.topology.atoms())
    assert mass * 1.66054e-24 / (np.prod(box) * 1e-21) == pytest.approx(0.5, rel=1e-3)
    xyz = pdb.getPositions(asNumpy=True)._value
    assert build.min_nonbonded_distance_nm(pdb.topology, xyz, box) >= 0.1
    assert abs(_charges(pdb.topology, FF).sum()) < 1e-6
    comp = json.loads((tmp_path / "composition.json").read_text())
    assert comp["seed"] == 11 and comp["provenance"]["seed"] == 11
    assert comp["eo_per_na_achieved"] == pytest.approx(6.0)


def test_same_seed_same_box(tmp_path):
    spec = {"eo_per_chain": 3, "chains": 2, "eo_per_na": 3}
    build.build_box("a", spec, BUILD, 5, tmp_path / "a", 0.6)
    build.build_box("a", spec, BUILD, 5, tmp_path / "b", 0.6)
    build.build_box("a", spec, BUILD, 6, tmp_path / "c", 0.6)
    a, b, c = (app.PDBFile(str(tmp_path / k / "box.pdb")).getPositions(asNumpy=True)._value for k in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_composite_box_real_slab(tmp_path):
    spec = {"eo_per_chain": 10, "chains": 99, "eo_per_na": 20, "mof_wt_percent": 40, "mof_metal": "FeNi", "mof_cells": [1, 1, 1]}
    rec = build.build_box("cpe", spec, BUILD, 3, tmp_path, 0.9)
    assert abs(rec["mof_wt_percent_achieved"] - 40) <= 0.5
    assert rec["chains_ignored"] is True and rec["counts"]["peo_chains"] != 99
    assert rec["counts"]["mof_metal_atoms"] == {"FE": 28, "NI": 28}  # 24 per cell + 4 face paddlewheels (capped slab)
    pdb = app.PDBFile(str(tmp_path / "box.pdb"))
    xyz = pdb.getPositions(asNumpy=True)._value
    box = np.array(rec["box_nm"])
    n_mof = rec["counts"]["mof_atoms"]
    t = rec["mof"]["thickness_nm"]
    z = np.mod(xyz[n_mof:, 2], box[2])
    assert np.all((z >= t + 0.2 - 1e-3) & (z <= box[2] - 0.2 + 1e-3))  # PDB rounds to 1e-4 nm
    assert build.min_nonbonded_distance_nm(pdb.topology, xyz, box) >= 0.1
    assert _min_intermolecular_nm(pdb.topology, xyz, box) >= 0.2 - 2e-4
    _check_bonds_whole(pdb.topology, xyz, skip_residues=MOF_RESIDUES)
    assert abs(_charges(pdb.topology, FF | {"nonbonded_cutoff_nm": 0.9}).sum()) < 1e-6
    # masses in composition.json add up to the requested fraction from the topology itself
    mof_mass = sum(a.element.mass._value for a in pdb.topology.atoms() if a.residue.name in MOF_RESIDUES)
    total = sum(a.element.mass._value for a in pdb.topology.atoms())
    assert 100 * mof_mass / total == pytest.approx(rec["mof_wt_percent_achieved"], abs=1e-6)


def test_composite_short_chain_when_whole_chains_miss():
    # 40 EO chains around a light 3000 amu "slab" at 45 wt%: whole chains give 40.8 or 58 wt%
    plan = build.composite_chains(3000.0, 45.0, 40, 20, "systems.x")
    assert plan["chain_eo"][-1] < 40 and plan["chain_eo"][-1] >= 2
    assert abs(plan["wt_percent"] - 45.0) <= 0.5
    plan = build.composite_chains(9000.0, 40.0, 10, 20, "systems.x")
    assert plan["chain_eo"] == [10] * len(plan["chain_eo"]) and abs(plan["wt_percent"] - 40.0) <= 0.5


@pytest.mark.parametrize(
    "spec, key, err",
    [
        ({"eo_per_chain": 4, "chains": 2, "eo_per_na": 4, "mof_wt_percent": 50}, "mof_wt_percent", ConfigError),
        ({"eo_per_chain": 4, "chains": 2, "eo_per_na": 4, "mof_wt_percent": -1}, "mof_wt_percent", ConfigError),
        ({"eo_per_chain": 4, "chains": 2, "eo_per_na": 0}, "eo_per_na", ConfigError),
        ({"eo_per_chain": 1, "chains": 2, "eo_per_na": 4}, "eo_per_chain", ConfigError),
        ({"eo_per_chain": 4, "eo_per_na": 4, "mof_wt_percent": 10, "mof_metal": "Zn"}, "mof_metal", ConfigError),
        ({"eo_per_chain": 4, "chains": 2, "eo_per_na": 4}, "chains", BuildError),  # box < 2 x cutoff
        ({"eo_per_chain": 4, "eo_per_na": 4, "mof_wt_percent": 10, "mof_cells": [1, 1, 1]}, "mof_cells", BuildError),
    ],
)
def test_invalid_inputs_write_nothing(tmp_path, spec, key, err):
    cutoff = 1.4 if key == "mof_cells" else 0.9
    with pytest.raises(err, match=key) as info:
        build.build_box("bad", spec, BUILD, 1, tmp_path / "out", cutoff)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _molecules(topology):
    """Molecule index of every atom (connected components of the bond graph)."""
    n = topology.getNumAtoms()
    ij = np.array([(a.index, b.index) for a, b in topology.bonds()])
    graph = sparse.coo_matrix((np.ones(len(ij)), (ij[:, 0], ij[:, 1])), shape=(n, n))
    return csgraph.connected_components(graph, directed=False)[1]


def _min_intermolecular_nm(topology, xyz, box, within=0.5):
    mol = _molecules(topology)
    pairs = cKDTree(np.mod(xyz, box), boxsize=box).query_pairs(within, output_type="ndarray")
    pairs = pairs[mol[pairs[:, 0]] != mol[pairs[:, 1]]]
    d = xyz[pairs[:, 0]] - xyz[pairs[:, 1]]
    d -= np.round(d / box) * box
    return np.linalg.norm(d, axis=1).min()


def _template_bond_nm(a, b, tfsi_xyz):
    if a.residue.name == "TFS":
        names = [x.name for x in molecules.tfsi().topology.atoms()]
        return np.linalg.norm(tfsi_xyz[names.index(a.name)] - tfsi_xyz[names.index(b.name)])
    pair = frozenset((a.element.symbol, b.element.symbol))
    return {frozenset("CO"): molecules.R_CO, frozenset("C"): molecules.R_CC, frozenset("CH"): molecules.R_CH}[pair]


def _check_bonds_whole(topology, xyz, skip_residues=()):
    """Every bond (unwrapped coordinates, so molecules are whole) at its template length within 1e-3 nm."""
    tfsi_xyz = molecules.tfsi().positions_nm
    worst = 0.0
    for a, b in topology.bonds():
        if a.residue.name in skip_residues:
            continue
        worst = max(worst, abs(np.linalg.norm(xyz[a.index] - xyz[b.index]) - _template_bond_nm(a, b, tfsi_xyz)))
    assert worst < 1e-3


def test_moderate_box_grown_in_place(tmp_path):
    # ~2,900 atoms at 0.6 g/cm3 (denser than packmol managed), 20-EO chains in a ~3.8 nm box
    spec = {"eo_per_chain": 20, "chains": 16, "eo_per_na": 10}
    cfg = {"start_density_g_cm3": 0.6, "packing_tolerance_nm": 0.2}
    rec = build.build_box("mid", spec, cfg, 7, tmp_path, 0.9)
    pdb = app.PDBFile(str(tmp_path / "box.pdb"))
    top, xyz, box = pdb.topology, pdb.getPositions(asNumpy=True)._value, np.array(rec["box_nm"])
    # composition
    assert rec["counts"]["atoms"] == top.getNumAtoms() == 16 * (7 * 20 + 9) + 32 * 16
    assert rec["counts"]["na"] == rec["counts"]["tfsi"] == 32 and rec["eo_per_na_achieved"] == pytest.approx(10.0)
    names = [r.name for r in top.residues()]
    assert names.count("PEH") == names.count("PET") == 16 and names.count("PEM") == 320
    assert names.count("NA") == names.count("TFS") == 32
    assert rec["box_density_g_cm3"] == pytest.approx(0.6, rel=1e-6)
    # no clashes: other molecules >= the packing tolerance (PDB rounds to 1e-4 nm), own chain >= CLASH_ANY_NM
    assert _min_intermolecular_nm(top, xyz, box) >= 0.2 - 2e-4
    assert build.min_nonbonded_distance_nm(top, xyz, box) >= molecules.CLASH_ANY_NM - 2e-4
    _check_bonds_whole(top, xyz)
    assert abs(_charges(top, FF | {"nonbonded_cutoff_nm": 0.9}).sum()) < 1e-6
    # coils, not rods: ends well inside the contour length, O-C-C-O torsions mostly but not all gauche
    heavy_by_chain, mol = {}, _molecules(top)
    for atom in top.atoms():
        if atom.residue.name in ("PEH", "PEM", "PET") and atom.element.symbol != "H":
            heavy_by_chain.setdefault(mol[atom.index], []).append(atom.index)
    assert len(heavy_by_chain) == 16
    contour = 21 * (0.141 * 2 + 0.1529) * 0.83
    occo = []
    for heavy in heavy_by_chain.values():
        assert len(heavy) == 3 * 20 + 3
        assert np.linalg.norm(xyz[heavy[0]] - xyz[heavy[-1]]) < 0.8 * contour
        occo += [_dihedral(*xyz[heavy[i : i + 4]]) for i in range(1, len(heavy) - 3, 3)]
    gauche = np.mean([abs(abs(t) - 65) < 35 for t in occo])
    assert 0.4 < gauche < 0.95
    # molecules spread over the whole box (not all in one corner)
    counts, _ = np.histogramdd(np.mod(xyz, box), bins=2, range=[(0, b) for b in box])
    assert counts.min() > 0.5 * counts.mean()


@pytest.mark.parametrize(
    "spec, cfg, what",
    [
        # the ions go first: the second TFSI finds no spot 0.5 nm from everything else
        ({"eo_per_chain": 4, "chains": 3, "eo_per_na": 2}, {"start_density_g_cm3": 1.5, "packing_tolerance_nm": 0.5}, "TFSI"),
        # one ion pair fits, the first chain does not
        ({"eo_per_chain": 4, "chains": 3, "eo_per_na": 12}, {"start_density_g_cm3": 1.2, "packing_tolerance_nm": 0.5}, "chain 1 of 3"),
    ],
)
def test_too_dense_is_a_one_line_build_error(tmp_path, spec, cfg, what):
    with pytest.raises(BuildError, match="start_density_g_cm3") as info:
        build.build_box("dense", spec, cfg, 1, tmp_path / "out", 0.5)
    assert what in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_film_centre_short_of_the_target_is_a_build_error(tmp_path, monkeypatch):
    """With no z rounds allowed the slab box stops at the first compression, whose film centre is ~4 % light
    (1.105 of 1.15): a one-line error naming the key, nothing written."""
    monkeypatch.setattr(build, "FILM_CENTRE_ROUNDS", 0)
    spec = {"eo_per_chain": 10, "eo_per_na": 20, "mof_wt_percent": 40, "mof_metal": "FeNi", "mof_cells": [1, 1, 1]}
    cfg = {"start_density_g_cm3": 0.6, "target_density_g_cm3": 1.15, "packing_tolerance_nm": 0.2}
    with pytest.raises(BuildError, match="build.target_density_g_cm3 = 1.15") as info:
        build.build_box("CPE", spec, cfg, 2025, tmp_path / "out", 0.9)
    assert "film centre reached 1.1" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,spec", [
    ("PEO", {"eo_per_chain": 10, "chains": 12, "eo_per_na": 20, "mof_wt_percent": 0}),
    ("CPE", {"eo_per_chain": 10, "eo_per_na": 20, "mof_wt_percent": 40, "mof_metal": "FeNi", "mof_cells": [1, 1, 1]}),
])
def test_grown_dilute_then_compressed_to_the_target_electrolyte_density(tmp_path, name, spec):
    """Grown at 0.6 g/cm3 (the grower's limit at paper scale), compressed to 1.15: the plain box, or the slab
    box's film centre as the analysis measures it, holds 1.15 g/cm3, no overlaps, bonded geometry kept."""
    import MDAnalysis as mda

    from spemd.analysis.volume import ElectrolyteVolume, slab_atoms

    cfg = {"start_density_g_cm3": 0.6, "target_density_g_cm3": 1.15, "packing_tolerance_nm": 0.2}
    rec = build.build_box(name, spec, cfg, 2025, tmp_path, 0.9)
    tol = 1e-9 if name == "PEO" else build.FILM_CENTRE_TOLERANCE
    assert rec["electrolyte_density_g_cm3"] == pytest.approx(1.15, rel=tol)
    assert rec["min_nonbonded_distance_nm"] >= 0.15
    u = mda.Universe(str(tmp_path / "box.pdb"))
    assert u.dimensions[:3] == pytest.approx(10 * np.array(rec["box_nm"]), abs=0.01)
    slab = slab_atoms(u)
    electrolyte = u.atoms if slab is None else u.atoms - slab
    if slab is not None:
        # the analysis's film centre (spemd.analysis.volume) holds the target; compressing only the region
        # outside the slab's z-extent to 1.15 left it at 1.105: the electrolyte is densest at the faces
        ev = ElectrolyteVolume(slab, electrolyte, max_volume_frames=1).run()
        assert ev.results.mean_film_centre_density_g_cm3 == pytest.approx(1.15, rel=build.FILM_CENTRE_TOLERANCE)
        assert rec["outside_slab_extent_density_g_cm3"] > 1.2  # measured 1.246
        assert 1 <= rec["film_centre_compression_rounds"] <= build.FILM_CENTRE_ROUNDS
        # the occupied volume includes the gaps at the slab's faces and its pore mouths: more than the region
        assert ev.results.mean_volume_nm3 > rec["electrolyte_volume_nm3"]
        assert rec["box_density_g_cm3"] < 1.0  # the whole box is not what was compressed to 1.15
    # bonds survive the compression (grown C-O 0.141, C-H 0.109 nm; restraints hold them)
    top = app.PDBFile(str(tmp_path / "box.pdb")).topology
    xyz = u.atoms.positions / 10.0
    for a, b in list(top.bonds())[::50]:
        if {a.element.symbol, b.element.symbol} == {"C", "O"} and a.residue.name.startswith("PE"):
            assert np.linalg.norm(xyz[a.index] - xyz[b.index]) == pytest.approx(0.141, abs=0.01)
