"""Force-field XML, geometric LJ mixing, charge scaling, metal overrides, HMR/rigid MOF and exports."""

import itertools
import json
import math
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from spemd.forcefields.export import export_amber, export_gromacs
from spemd.forcefields.library import FF_DIR
from spemd.forcefields.parametrise import METAL_TYPES, TFSI_O_TYPE, create_system, parametrise
from spemd.errors import ConfigError
from spemd.systems import molecules
from spemd.systems.build import _append

ONE = {"charge_scale": 1.0, "nonbonded_cutoff_nm": 1.0, "hydrogen_mass_amu": None}
COULOMB = 138.935458  # kJ/mol nm e^-2


def _topology(mols, spacing=1.5, box=5.0):
    top = app.Topology()
    xyz = []
    for k, mol in enumerate(mols):
        _append(top, mol.topology)
        xyz.append(mol.positions_nm + np.array([k * spacing, 0.5, 0.5]))
    top.setPeriodicBoxVectors(np.eye(3) * box * u.nanometer)
    return top, np.vstack(xyz)


def _energy(system, xyz, groups=None):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(xyz)
    state = ctx.getState(getEnergy=True, groups=groups) if groups is not None else ctx.getState(getEnergy=True)
    return state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)


def _force_by_name(system, name):
    return next(f for f in system.getForces() if f.getName() == name or f.__class__.__name__ == name)


# ---------------------------------------------------------------- independent term-by-term hand sum


def _xml_params(files):
    """Parameters read straight from the XML text (not through openmm.app)."""
    p = {"types": {}, "res": {}, "bond": {}, "angle": {}, "rb": {}, "periodic": {}, "lj": {}}
    for f in files:
        root = ET.parse(f).getroot()
        for t in root.iter("Type"):
            p["types"][t.get("name")] = t.get("class")
        for r in root.iter("Residue"):
            p["res"][r.get("name")] = {a.get("name"): (a.get("type"), float(a.get("charge"))) for a in r.iter("Atom")}
        for b in root.iter("Bond"):
            if b.get("class1"):
                p["bond"][frozenset((b.get("class1"), b.get("class2")))] = (float(b.get("length")), float(b.get("k")))
        for a in root.iter("Angle"):
            key = (a.get("class1"), a.get("class2"), a.get("class3"))
            p["angle"][key] = p["angle"][key[::-1]] = (float(a.get("angle")), float(a.get("k")))
        for t in root.find("RBTorsionForce") or []:
            key = tuple(t.get(f"class{i}") for i in range(1, 5))
            p["rb"][key] = p["rb"][key[::-1]] = [float(t.get(f"c{i}")) for i in range(6)]
        for t in root.find("PeriodicTorsionForce") or []:
            key = tuple(t.get(f"class{i}") for i in range(1, 5))
            terms = [(int(t.get(f"periodicity{i}")), float(t.get(f"phase{i}")), float(t.get(f"k{i}"))) for i in (1, 2, 3) if t.get(f"k{i}")]
            p["periodic"][key] = p["periodic"][key[::-1]] = terms
        for a in root.iter("Atom"):
            if a.get("sigma"):
                p["lj"][a.get("type")] = (float(a.get("sigma")), float(a.get("epsilon")))
    return p


def _hand_energy(top, xyz, p, scale):
    atoms = list(top.atoms())
    n = len(atoms)
    types = [p["res"][a.residue.name][a.name][0] for a in atoms]
    cls = [p["types"][t] for t in types]
    q = np.array([p["res"][a.residue.name][a.name][1] * (scale if a.residue.name in ("NA", "TFS") else 1.0) for a in atoms])
    nbr = [set() for _ in range(n)]
    for a, b in top.bonds():
        nbr[a.index].add(b.index)
        nbr[b.index].add(a.index)
    e = 0.0
    for a, b in top.bonds():
        r0, k = p["bond"][frozenset((cls[a.index], cls[b.index]))]
        e += 0.5 * k * (np.linalg.norm(xyz[a.index] - xyz[b.index]) - r0) ** 2
    angles, torsions = set(), set()
    for j in range(n):
        for i, k in itertools.combinations(sorted(nbr[j]), 2):
            angles.add((i, j, k))
    for j, k in {tuple(sorted((a.index, b.index))) for a, b in top.bonds()}:
        for i in nbr[j] - {k}:
            for l in nbr[k] - {j}:
                if i != l:
                    torsions.add((i, j, k, l))
    for i, j, k in angles:
        v1, v2 = xyz[i] - xyz[j], xyz[k] - xyz[j]
        th = math.acos(np.dot(v1, v2) / np.linalg.norm(v1) / np.linalg.norm(v2))
        th0, kk = p["angle"][(cls[i], cls[j], cls[k])]
        e += 0.5 * kk * (th - th0) ** 2
    for i, j, k, l in torsions:
        b0, b1, b2 = xyz[j] - xyz[i], xyz[k] - xyz[j], xyz[l] - xyz[k]
        n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
        phi = math.atan2(np.dot(np.cross(n1, n2), b1 / np.linalg.norm(b1)), np.dot(n1, n2))
        key = (cls[i], cls[j], cls[k], cls[l])
        if key in p["rb"]:
            psi = phi - math.pi
            e += sum(c * math.cos(psi) ** m for m, c in enumerate(p["rb"][key]))
        else:
            e += sum(kk * (1 + math.cos(per * phi - ph)) for per, ph, kk in p["periodic"][key])
    for i in range(n):
        one = nbr[i]
        two = set().union(*(nbr[x] for x in one))
        three = set().union(*(nbr[x] for x in two))
        for j in range(i + 1, n):
            if j in one or j in two:
                continue
            f = 0.5 if j in three else 1.0
            r = np.linalg.norm(xyz[i] - xyz[j])
            si, ei = p["lj"][types[i]]
            sj, ej = p["lj"][types[j]]
            s, eps = math.sqrt(si * sj), math.sqrt(ei * ej)
            e += f * (4 * eps * ((s / r) ** 12 - (s / r) ** 6) + COULOMB * q[i] * q[j] / r)
    return e


@pytest.mark.parametrize("which", ["peo3", "tfsi"])
@pytest.mark.parametrize("scale", [1.0, 0.8])
def test_energy_matches_hand_sum(which, scale):
    mol = molecules.peo_chain(3, np.random.default_rng(2)) if which == "peo3" else molecules.tfsi()
    top, xyz = _topology([mol])
    # perturb away from the minimum so every term contributes
    xyz = xyz + np.random.default_rng(0).normal(0, 0.004, xyz.shape)
    system, _ = create_system(top, ONE | {"charge_scale": scale}, nonbonded_method=app.NoCutoff, constraints=None)
    ours = _energy(system, xyz)
    files = [FF_DIR / "peo.xml", FF_DIR / "tfsi.xml", FF_DIR / "sodium_aqvist.xml"]
    hand = _hand_energy(top, xyz, _xml_params(files), scale)
    assert ours == pytest.approx(hand, rel=1e-4, abs=1e-6)


def test_templates_make_neutral_chains_and_unit_ions():
    res = _xml_params([FF_DIR / "peo.xml", FF_DIR / "tfsi.xml", FF_DIR / "sodium_aqvist.xml"])["res"]
    total = {name: sum(q for _, q in atoms.values()) for name, atoms in res.items()}
    assert total["PEH"] == pytest.approx(-0.2) and total["PEM"] == pytest.approx(0.0) and total["PET"] == pytest.approx(0.2)
    assert total["TFS"] == pytest.approx(-1.0) and total["NA"] == pytest.approx(1.0)
    assert res["PEH"]["C1"][1] == 0.11 and res["PET"]["C1"][1] == 0.11 and res["PEM"]["C1"][1] == 0.14


# ---------------------------------------------------------------- geometric mixing


def _pair_system(system, info, t1, t2):
    """Two particles (types t1, t2) interacting only through a copy of the system's LJGeometric."""
    lj = _force_by_name(system, "LJGeometric")
    f = openmm.CustomNonbondedForce(lj.getEnergyFunction())
    for k in range(lj.getNumPerParticleParameters()):
        f.addPerParticleParameter(lj.getPerParticleParameterName(k))
    s = openmm.System()
    for t in (t1, t2):
        f.addParticle(lj.getParticleParameters(info["particle_types"].index(t)))
        s.addParticle(1.0)
    s.addForce(f)
    return s


def test_geometric_mixing_exact():
    top, xyz = _topology([molecules.peo_chain(2, np.random.default_rng(0)), molecules.tfsi()])
    system, info = create_system(top, ONE)
    lj = _force_by_name(system, "LJGeometric")
    assert lj.getUseLongRangeCorrection()
    assert lj.getCutoffDistance().value_in_unit(u.nanometer) == pytest.approx(1.0)
    nb = _force_by_name(system, "NonbondedForce")
    assert all(nb.getParticleParameters(i)[2]._value == 0.0 for i in range(system.getNumParticles()))
    assert not nb.getUseDispersionCorrection()
    # the two sigmas are far apart, so geometric and Lorentz means differ (0.2979 vs 0.3025 nm)
    s_h, e_h = 0.250, 0.12552
    s_s, e_s = 0.355, 1.046
    pair = _pair_system(system, info, "peo_HC", "tfsi_S")
    r0 = math.sqrt(s_h * s_s)
    assert abs(_energy(pair, [[0, 0, 0], [r0, 0, 0]])) < 1e-9
    r = 0.31
    geo = 4 * math.sqrt(e_h * e_s) * ((r0 / r) ** 12 - (r0 / r) ** 6)
    s_lb = 0.5 * (s_h + s_s)
    lb = 4 * math.sqrt(e_h * e_s) * ((s_lb / r) ** 12 - (s_lb / r) ** 6)
    got = _energy(pair, [[0, 0, 0], [r, 0, 0]])
    assert got == pytest.approx(geo, rel=1e-9)
    assert abs(got - lb) > 0.2 * abs(lb)


def test_one_four_pairs_use_geometric_sigma():
    top, _ = _topology([molecules.peo_chain(2, np.random.default_rng(0))])
    system, _ = create_system(top, ONE)
    nb = _force_by_name(system, "NonbondedForce")
    lj = _force_by_name(system, "LJGeometric")
    assert lj.getNumExclusions() == nb.getNumExceptions()
    sig = {"C": 0.35, "O": 0.29, "H": 0.25}
    eps = {"C": 0.276144, "O": 0.58576, "H": 0.12552}
    atoms = list(top.atoms())
    n14 = 0
    for k in range(nb.getNumExceptions()):
        i, j, qq, s, e = nb.getExceptionParameters(k)
        if e._value != 0:
            ei, ej = atoms[i].element.symbol, atoms[j].element.symbol
            assert s._value == pytest.approx(math.sqrt(sig[ei] * sig[ej]), rel=1e-12)
            assert e._value == pytest.approx(0.5 * math.sqrt(eps[ei] * eps[ej]), rel=1e-12)
            n14 += 1
    assert n14 > 0


# ---------------------------------------------------------------- charges, overrides, cutoff, MOF


def test_charge_scale_scales_ionic_coulomb_by_square():
    top, xyz = _topology([molecules.sodium(), molecules.tfsi()], spacing=0.5)
    energies = {}
    for scale in (1.0, 0.8):
        system, info = create_system(top, ONE | {"charge_scale": scale}, nonbonded_method=app.NoCutoff)
        for f in system.getForces():
            f.setForceGroup(1 if isinstance(f, openmm.NonbondedForce) else 0)
        far = xyz.copy()
        far[0] += [40.0, 0.0, 0.0]  # Na only (atom 0): intramolecular terms, incl. 1-4 LJ, cancel
        energies[scale] = _energy(system, xyz, groups={1}) - _energy(system, far, groups={1})
        assert info["net_charge_e"] == pytest.approx(0.0, abs=1e-12)
    assert energies[0.8] / energies[1.0] == pytest.approx(0.64, rel=1e-9)
    assert abs(energies[1.0]) > 10.0


def test_cutoff_above_half_box_is_an_error():
    top, _ = _topology([molecules.sodium(), molecules.tfsi()], box=1.8)
    with pytest.raises(ConfigError, match="forcefield.nonbonded_cutoff_nm"):
        create_system(top, ONE)


def test_unknown_sodium_set_is_an_error():
    top, _ = _topology([molecules.sodium()])
    with pytest.raises(ConfigError, match="forcefield.sodium"):
        create_system(top, ONE | {"sodium": "charmm"})


def test_joung_cheatham_sodium_selectable():
    top, _ = _topology([molecules.sodium(), molecules.tfsi()])
    system, info = create_system(top, ONE | {"sodium": "joung_cheatham_spce"})
    assert info["type_sigma_nm"]["na_Na"] == pytest.approx(0.2159538)
    assert info["type_epsilon_kj_mol"]["na_Na"] == pytest.approx(1.4754533)


@pytest.fixture(scope="module")
def slab_box():
    from spemd.systems.mof import build_slab

    slab = build_slab("FeNi", (1, 1, 1))
    top = app.Topology()
    _append(top, slab.topology)
    na, tf = molecules.sodium(), molecules.tfsi()
    _append(top, na.topology)
    _append(top, tf.topology)
    z = slab.thickness_nm
    xyz = np.vstack([slab.positions_nm, na.positions_nm + [1.0, 1.0, z + 1.0], tf.positions_nm + [1.5, 1.5, z + 2.0]])
    top.setPeriodicBoxVectors(np.diag([slab.box_x_nm, slab.box_y_nm, z + 3.0]) * u.nanometer)
    return top, xyz, slab.topology.getNumAtoms()


def _pair_term_sum(top, xyz, info, pairs, box=None, cutoff=None):
    """Hand sum over metal x O(TFSI) atom pairs of (pair term - geometric term) - C4/r^4, with the
    minimum image and cutoff when `box` is given."""
    types = info["particle_types"]
    s_o, e_o = info["type_sigma_nm"][TFSI_O_TYPE], info["type_epsilon_kj_mol"][TFSI_O_TYPE]
    oxygens = [i for i, t in enumerate(types) if t == TFSI_O_TYPE]
    total = 0.0
    for metal, (sig, eps, c4) in pairs.items():
        t = METAL_TYPES[metal]
        s_g, e_g = math.sqrt(info["type_sigma_nm"][t] * s_o), math.sqrt(info["type_epsilon_kj_mol"][t] * e_o)
        for i in (k for k, ti in enumerate(types) if ti == t):
            for j in oxygens:
                d = xyz[i] - xyz[j]
                if box is not None:
                    d -= box * np.round(d / box)
                r = np.linalg.norm(d)
                if cutoff is not None and r >= cutoff:
                    continue
                total += 4 * eps * ((sig / r) ** 12 - (sig / r) ** 6) - 4 * e_g * ((s_g / r) ** 12 - (s_g / r) ** 6) - c4 / r**4
    return total


def _pair_force_energy(system, base, xyz):
    """Energy of LJPairOverrides alone, after checking that LJGeometric is the same as in `base`
    (so the pair terms change the energy by exactly this; a difference of totals would lose digits
    to the slab's large energy)."""
    lj, lj0 = _force_by_name(system, "LJGeometric"), _force_by_name(base, "LJGeometric")
    assert openmm.XmlSerializer.serialize(lj) == openmm.XmlSerializer.serialize(lj0)
    for f in system.getForces():
        f.setForceGroup(1 if f.getName() == "LJPairOverrides" else 0)
    return _energy(system, xyz, groups={1})


def test_metal_pair_terms_and_c4_add_exactly_the_pair_difference(slab_box):
    top, xyz, _ = slab_box
    cfg = ONE | {"nonbonded_cutoff_nm": 1.2}
    # pair term with a 12-6-4 C4 on the Fe of the Fe-Ni slab (key FeNi, type mof_FeNiFe); Fe-only's key and Cu
    # are not in this slab: recorded as not applied
    pairs = {"FeNi": (0.28, 2.5, 0.004)}
    over_cfg = cfg | {"metal_o_tfsi": {"FeNi": {"sigma_nm": 0.28, "epsilon_kj_mol": 2.5, "c4_kJ_nm4_per_mol": 0.004},
                                        "Fe": {"sigma_nm": 0.3, "epsilon_kj_mol": 1.0},
                                        "Cu": {"sigma_nm": 0.3, "epsilon_kj_mol": 1.0}}}
    # put one TFSI O 0.25 nm above an Fe so that the pair term is large (close contact)
    types = create_system(top, cfg, nonbonded_method=app.NoCutoff)[1]["particle_types"]
    fe = types.index(METAL_TYPES["FeNi"])
    o = types.index(TFSI_O_TYPE)
    xyz = xyz.copy()
    shift = xyz[fe] + [0.0, 0.0, 0.25] - xyz[o]
    tfsi = [i for i, a in enumerate(top.atoms()) if a.residue.name == "TFS"]
    xyz[tfsi] += shift

    # open boundaries: every metal-O pair counts
    base, info = create_system(top, cfg, nonbonded_method=app.NoCutoff)
    over, info2 = create_system(top, over_cfg, nonbonded_method=app.NoCutoff)
    hand = _pair_term_sum(top, xyz, info, pairs)
    assert abs(hand) > 1.0  # the test configuration probes the pair term, not noise
    assert _pair_force_energy(over, base, xyz) == pytest.approx(hand, rel=1e-9, abs=1e-9)
    assert info2["metal_o_tfsi"]["FeNi"] == {"sigma_nm": 0.28, "epsilon_kj_mol": 2.5, "c4_kJ_nm4_per_mol": 0.004, "applied": True}
    assert info2["metal_o_tfsi"]["Fe"]["applied"] is False
    assert info2["metal_o_tfsi"]["Cu"]["applied"] is False and info2["metal_o_tfsi"]["Cu"]["c4_kJ_nm4_per_mol"] == 0.0

    # periodic: minimum image within the cutoff plus the long-range correction of the correction,
    # 4 pi N_Fe N_O / V * (dA/(9 rc^9) - dB/(3 rc^3) - C4/rc) (N_Fe N_O pairs, the Fe x O group only)
    base, _ = create_system(top, cfg)
    over, _ = create_system(top, over_cfg)
    box = np.array([top.getPeriodicBoxVectors()[k][k].value_in_unit(u.nanometer) for k in range(3)])
    rc = 1.2
    n_fe, n_o = types.count(METAL_TYPES["FeNi"]), types.count(TFSI_O_TYPE)
    s_g = math.sqrt(info["type_sigma_nm"][METAL_TYPES["FeNi"]] * info["type_sigma_nm"][TFSI_O_TYPE])
    e_g = math.sqrt(info["type_epsilon_kj_mol"][METAL_TYPES["FeNi"]] * info["type_epsilon_kj_mol"][TFSI_O_TYPE])
    d_a, d_b = 4 * 2.5 * 0.28**12 - 4 * e_g * s_g**12, 4 * 2.5 * 0.28**6 - 4 * e_g * s_g**6
    lrc = 4 * math.pi * n_fe * n_o / box.prod() * (d_a / (9 * rc**9) - d_b / (3 * rc**3) - 0.004 / rc)
    hand = _pair_term_sum(top, xyz, info, pairs, box=box, cutoff=rc) + lrc
    assert abs(lrc) > 0.1
    # OpenMM integrates a custom force's long-range correction numerically (measured 1.4e-3 of it here)
    assert _pair_force_energy(over, base, xyz) == pytest.approx(hand, rel=0, abs=5e-3 * abs(lrc))
    corr = _force_by_name(over, "LJPairOverrides")
    assert corr.getNumExclusions() == _force_by_name(over, "NonbondedForce").getNumExceptions()
    assert not any(f.getName() == "LJPairOverrides" for f in base.getForces())


def test_pair_term_keys_are_checked(slab_box):
    top, _, _ = slab_box
    with pytest.raises(ConfigError, match=r"forcefield\.metal_o_tfsi\.Fe\.c4: unknown key; allowed keys: c4_kJ_nm4_per_mol, epsilon_kj_mol, sigma_nm"):
        create_system(top, ONE | {"nonbonded_cutoff_nm": 1.2, "metal_o_tfsi": {"Fe": {"sigma_nm": 0.3, "epsilon_kj_mol": 1.0, "c4": 1.0}}})
    with pytest.raises(ConfigError, match=r"forcefield\.metal_o_tfsi\.Fe\.c4_kJ_nm4_per_mol: 'x' is not a finite number"):
        create_system(top, ONE | {"nonbonded_cutoff_nm": 1.2, "metal_o_tfsi": {"Fe": {"sigma_nm": 0.3, "epsilon_kj_mol": 1.0, "c4_kJ_nm4_per_mol": "x"}}})


def test_rigid_and_flexible_mof(slab_box):
    top, xyz, n_mof = slab_box
    cfg = ONE | {"nonbonded_cutoff_nm": 1.2, "hydrogen_mass_amu": 1.5}
    rigid, info = create_system(top, cfg, xyz)
    assert info["mof_atom_indices"] == list(range(n_mof))
    assert all(rigid.getParticleMass(i)._value == 0 for i in range(n_mof))
    assert all(i >= n_mof and j >= n_mof for i, j, _ in (rigid.getConstraintParameters(k) for k in range(rigid.getNumConstraints())))
    flex, _ = create_system(top, cfg | {"rigid_mof": False}, xyz)
    assert flex.getParticleMass(0)._value > 0
    tether = _force_by_name(flex, "MofTether")
    assert tether.getNumParticles() == n_mof and tether.getGlobalParameterDefaultValue(0) == 1000.0



def test_mof_charge_scale_scales_only_the_host_charges(slab_box):
    top, xyz, n_mof = slab_box
    cfg = ONE | {"nonbonded_cutoff_nm": 1.2, "charge_scale": 0.8}
    full, _ = create_system(top, cfg)
    screened, info = create_system(top, cfg | {"mof_charge_scale": 0.3})
    nb_full, nb_scr = _force_by_name(full, "NonbondedForce"), _force_by_name(screened, "NonbondedForce")
    q = lambda nb: np.array([nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(nb.getNumParticles())])
    q_full, q_scr = q(nb_full), q(nb_scr)
    assert np.allclose(q_scr[:n_mof], 0.3 * q_full[:n_mof], rtol=0, atol=1e-12)
    assert np.array_equal(q_scr[n_mof:], q_full[n_mof:])  # Na+/TFSI- keep charge_scale 0.8 only
    assert abs(q_full[:n_mof]).max() > 0.5 and info["net_charge_e"] == pytest.approx(0.0, abs=1e-9)
    assert info["mof_charge_scale"] == 0.3
    # intramolecular exceptions of the host scale with the product of the two charges
    for k in range(nb_full.getNumExceptions()):
        i, j, qq_full, _, _ = nb_full.getExceptionParameters(k)
        qq_scr = nb_scr.getExceptionParameters(k)[2]
        expected = qq_full * (0.09 if i < n_mof else 1.0)
        assert qq_scr.value_in_unit(u.elementary_charge**2) == pytest.approx(expected.value_in_unit(u.elementary_charge**2), abs=1e-12)
    with pytest.raises(ConfigError, match=r"forcefield\.mof_charge_scale: 1\.5 is out of range"):
        create_system(top, cfg | {"mof_charge_scale": 1.5})

# ---------------------------------------------------------------- parametrise + exports


def test_parametrise_and_exports_agree(tmp_path):
    top, xyz = _topology([molecules.peo_chain(3, np.random.default_rng(5)), molecules.tfsi(), molecules.sodium()], spacing=1.0, box=3.0)
    with open(tmp_path / "box.pdb", "w") as fh:
        app.PDBFile.writeFile(top, xyz * u.nanometer, fh)
    cfg = {"charge_scale": 0.8, "nonbonded_cutoff_nm": 1.0, "hydrogen_mass_amu": 1.5, "sodium": "aqvist"}
    rec = parametrise(tmp_path / "box.pdb", cfg, tmp_path / "params")
    meta = json.loads((tmp_path / "params" / "forcefield.json").read_text())
    assert meta["mixing"] == "geometric" and meta["charge_scale"] == 0.8 and meta["has_mof_slab"] is False
    assert set(meta["xml_files"]) == {"peo.xml", "tfsi.xml", "sodium_aqvist.xml"}
    system = openmm.XmlSerializer.deserialize((tmp_path / "params" / "system.xml").read_text())
    assert system.getNumConstraints() == 4 * 3 + 6  # every C-H of the trimer (HBonds)
    h_mass = [system.getParticleMass(a.index)._value for a in top.atoms() if a.element.symbol == "H"]
    assert np.allclose(h_mass, 1.5)
    assert rec["n_atoms"] == top.getNumAtoms()

    export_gromacs(tmp_path / "params", tmp_path / "gmx")
    export_amber(tmp_path / "params", tmp_path / "amber")
    assert "comb-rule" in (tmp_path / "gmx" / "system.top").read_text()
    ours, _ = create_system(app.PDBFile(str(tmp_path / "box.pdb")).topology, cfg, nonbonded_method=app.NoCutoff, constraints=None)
    pos = app.PDBFile(str(tmp_path / "box.pdb")).getPositions(asNumpy=True)._value
    e_ours = _energy(ours, pos)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import parmed

        gmx = parmed.load_file(str(tmp_path / "gmx" / "system.top"), xyz=str(tmp_path / "gmx" / "system.gro"))
        amb = parmed.load_file(str(tmp_path / "amber" / "system.prmtop"), str(tmp_path / "amber" / "system.inpcrd"))
    e_gmx = _energy(gmx.createSystem(nonbondedMethod=app.NoCutoff, constraints=None), pos)
    assert e_gmx == pytest.approx(e_ours, rel=1e-4)
    # Amber has no RB torsions: ParmEd converts them to Fourier series and drops the constant terms,
    # so energies differ by a constant and the forces must agree
    sys_amb = amb.createSystem(nonbondedMethod=app.NoCutoff, constraints=None)
    f = []
    for s in (ours, sys_amb):
        ctx = openmm.Context(s, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(pos)
        f.append(ctx.getState(getForces=True).getForces(asNumpy=True)._value)
    assert np.abs(f[0] - f[1]).max() < 1e-3 * np.abs(f[0]).max()


# ---------------------------------------------------------------- MOF charge sets (forcefield.mof_charges)


def _slab_only(metal):
    from spemd.systems.mof import build_slab

    slab = build_slab(metal, (1, 1, 1))
    top = app.Topology()
    _append(top, slab.topology)
    top.setPeriodicBoxVectors(np.diag([slab.box_x_nm, slab.box_y_nm, slab.thickness_nm + 3.0]) * u.nanometer)
    return top


@pytest.mark.parametrize("metal", ["Fe", "Ni", "Cu", "FeNi"])
def test_ddec_charge_set_is_neutral_and_replaces_the_xml_charges(metal):
    from spemd.forcefields.mof_charges import DDEC_BOYD2017

    top = _slab_only(metal)
    castillo, _ = create_system(top, ONE)
    ddec, info = create_system(top, ONE | {"mof_charges": "ddec_boyd2017", "mof_charge_scale": 0.5})
    nb_c, nb_d = _force_by_name(castillo, "NonbondedForce"), _force_by_name(ddec, "NonbondedForce")
    q = lambda nb: np.array([nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(nb.getNumParticles())])
    q_c, q_d = q(nb_c), q(nb_d)
    assert abs(q_d.sum()) < 1e-6 and abs(q_c.sum()) < 1e-6
    assert info["mof_charges"] == "ddec_boyd2017"
    # the table, typed by element and atom type, times mof_charge_scale
    expected = {"Fe": 0.8789, "Ni": 0.8789, "Cu": 0.8789, "mof_O": -0.53193, "mof_Ccarb": 0.61036,
                "mof_Cring": -0.09685, "mof_CH": -0.02448, "mof_H": 0.13538, "mof_Hfmt": 0.01405}  # fmt: skip
    for a, t, qd in zip(top.atoms(), info["particle_types"], q_d):
        assert qd == pytest.approx(0.5 * expected.get(a.element.symbol, expected.get(t)), abs=1e-9), (t, qd)
    assert DDEC_BOYD2017["mof_Hfmt"] == pytest.approx(0.01405, abs=1e-12)
    # castillo2008 is mof.xml itself: the explicit name changes nothing
    same, _ = create_system(top, ONE | {"mof_charges": "castillo2008"})
    assert np.array_equal(q(_force_by_name(same, "NonbondedForce")), q_c)
    # 1-4 exceptions inside the framework carry the new charges: qq = 0.5 q_i q_j (coulomb14scale)
    n14 = 0
    for k in range(nb_d.getNumExceptions()):
        i, j, qq, _, _ = nb_d.getExceptionParameters(k)
        if qq.value_in_unit(u.elementary_charge**2) != 0.0:
            n14 += 1
            assert qq.value_in_unit(u.elementary_charge**2) == pytest.approx(0.5 * q_d[i] * q_d[j], abs=1e-12)
    assert n14 > 0


def test_unknown_mof_charge_set_is_an_error(slab_box):
    top, _, _ = slab_box
    with pytest.raises(ConfigError, match=r"forcefield\.mof_charges: 'ddec' is not allowed; allowed values: 'castillo2008', 'ddec_boyd2017'"):
        create_system(top, ONE | {"mof_charges": "ddec"})


def test_forcefield_json_records_the_mof_charge_set(tmp_path):
    from spemd.systems.mof import build_slab

    slab = build_slab("Ni", (1, 1, 1))
    top = _slab_only("Ni")
    with open(tmp_path / "box.pdb", "w") as fh:
        app.PDBFile.writeFile(top, slab.positions_nm * u.nanometer, fh)
    meta = parametrise(tmp_path / "box.pdb", ONE | {"mof_charges": "ddec_boyd2017"}, tmp_path / "params")
    assert meta["mof_charges"] == "ddec_boyd2017" and "Boyd" in meta["mof_charges_source"]
    system = openmm.XmlSerializer.deserialize((tmp_path / "params" / "system.xml").read_text())
    nb = _force_by_name(system, "NonbondedForce")
    ni = next(a.index for a in top.atoms() if a.element.symbol == "Ni")
    assert nb.getParticleParameters(ni)[0].value_in_unit(u.elementary_charge) == pytest.approx(0.8789, abs=1e-9)


def test_charge_set_table_covers_new_metal_types_and_refuses_unknown_ones():
    from spemd.errors import InputError
    from spemd.forcefields.mof_charges import type_charges

    # a metal type added later (e.g. the Fe of a mixed paddlewheel) takes the set's metal charge
    assert type_charges("ddec_boyd2017", {"mof_FeNew": "Fe", "mof_O": "O"}) == {"mof_FeNew": 0.8789, "mof_O": -0.53193}
    assert type_charges("castillo2008", {"mof_FeNew": "Fe"}) is None  # mof.xml's own charges
    with pytest.raises(InputError, match=r"forcefield\.mof_charges: set 'ddec_boyd2017' has no charge for MOF atom type 'mof_X'"):
        type_charges("ddec_boyd2017", {"mof_X": "C"})
