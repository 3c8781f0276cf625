"""Parametrise a built box: OpenMM System with geometric LJ mixing, scaled ionic charges, HMR, rigid MOF.

OPLS-AA and CL&P combine LJ sigmas geometrically; OpenMM's NonbondedForce uses Lorentz-Berthelot.
So after app.ForceField.createSystem:
* NonbondedForce keeps the Coulomb part (PME) only: every particle's epsilon is set to 0;
* LJ moves to a CustomNonbondedForce 'LJGeometric' in per-particle product form
  E = a1*a2/r^12 - b1*b2/r^6,  a = sqrt(4 eps) sigma^6,  b = sqrt(4 eps) sigma^3,
  which is exactly 4 eps_ij (sigma_ij^12/r^12 - sigma_ij^6/r^6) with eps_ij = sqrt(eps_i eps_j) and
  sigma_ij = sqrt(sigma_i sigma_j); no table look-up, so it runs ~4x faster than per-type tables on CPU.
  On OpenMM 8.6's CPU platform it is still ~4.5x the NonbondedForce-LB System: ~90 % of its time is the
  per-pair overhead of any CustomNonbondedForce (measured floor: benchmarks/results/lj_forms_*.txt).
  Same cutoff, long-range dispersion correction on, one exclusion per NonbondedForce exception;
* per-metal metal-O(TFSI) pair terms (forcefield.metal_o_tfsi: sigma_nm, epsilon_kj_mol and an optional
  12-6-4 ion-induced-dipole c4_kJ_nm4_per_mol) go into a small CustomNonbondedForce 'LJPairOverrides'
  restricted to {metal atoms} x {TFSI O} that adds (pair term - geometric term) for exactly those pairs;
* MOF-MOF pairs of a rigid MOF are computed although constant: on OpenMM's CPU platform interaction
  groups make the whole force ~3x slower, and exclusions would have to be NonbondedForce exceptions
  as well (OpenMM requires identical exclusions), one per MOF-MOF pair (benchmarks/lj_forms.py);
* 1-4 pairs stay NonbondedForce exceptions (coulomb and LJ scaled 0.5) with the geometric sigma.
* forcefield.mof_charges other than mof.xml's own set (forcefields/mof_charges.py) replaces the MOF charges
  per atom type, before forcefield.mof_charge_scale; the MOF's scaled 1-4 charge products follow.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from spemd.forcefields import mof_charges
from spemd.forcefields.library import load_forcefield, xml_files
from spemd.errors import ConfigError, InputError
from spemd.files import atomic_path, write_json_atomic
from spemd.provenance import provenance, sha256_file
from spemd.slab import MOF_RESIDUES

ION_RESIDUES = ("NA", "TFS")
# charge_scale: electronic-continuum scaling of the ions; mof_charge_scale: the MOF's surface charge
# model (1.0 = the mof.xml charges as published; < 1 screens the host-guest Coulomb attraction, the
# knob that brings TFSI- adsorption energies down to DFT values, see forcefields/calibration.py)
DEFAULT_SCALES = {"charge_scale": 0.8, "mof_charge_scale": 1.0}
# metal_o_tfsi keys -> mof.xml types; "FeNi" is the Fe of the mixed FeNi paddlewheel (the Ni of FeNi keeps "Ni")
METAL_TYPES = {"Fe": "mof_Fe", "Ni": "mof_Ni", "Cu": "mof_Cu", "FeNi": "mof_FeNiFe"}
TFSI_O_TYPE = "tfsi_O"
# Tether of a flexible MOF: no MOF bonded terms are parametrised, so without it the framework would
# fall apart; 1000 kJ/mol/nm^2 keeps thermal displacements at 353 K near sqrt(kT/k) ~ 0.05 nm.
MOF_RESTRAINT_K = 1000.0
# product form of geometric mixing (module doc); other spellings (a1*a2/r^12 - b1*b2/r^6, ...) measured as fast
LJ_ENERGY = "(a1*a2*ir6 - b1*b2)*ir6; ir6 = 1/(r*r*r*r*r*r)"
# (override - geometric) for metal-O(TFSI) pairs plus the 12-6-4 term -C4/r^4; only the metal of a
# pair carries nonzero values, so the sums make the expression symmetric in the two particles
PAIR_ENERGY = "(da*ir6 - db)*ir6 - c4*ir2*ir2; ir6 = ir2*ir2*ir2; ir2 = 1/(r*r); da = da1 + da2; db = db1 + db2; c4 = c41 + c42"
PAIR_KEYS = {"sigma_nm", "epsilon_kj_mol", "c4_kJ_nm4_per_mol"}


class _TypeRecorder:
    """A ForceField generator that only records the atom type of every atom (public extension API)."""

    def __init__(self):
        self.types: list[str] = []

    def createForce(self, sys, data, nonbondedMethod, nonbondedCutoff, args):  # noqa: N802 (OpenMM API)
        self.types = [data.atomType[a] for a in data.atoms]


def lj_particle_coefficients(sigma_nm: float, epsilon_kj_mol: float) -> tuple[float, float]:
    """Per-particle (a, b) of the product form: a = sqrt(4 eps) sigma^6, b = sqrt(4 eps) sigma^3."""
    root = math.sqrt(4.0 * epsilon_kj_mol)
    return root * sigma_nm**6, root * sigma_nm**3


def _check_cfg(ff_cfg: dict) -> None:
    for key in ("charge_scale", "mof_charge_scale"):
        scale = ff_cfg.get(key, DEFAULT_SCALES[key])
        if not 0 < scale <= 1:
            raise ConfigError(f"forcefield.{key}: {scale!r} is out of range; must be > 0 and <= 1")
    mof_charges.check_set(ff_cfg.get("mof_charges", mof_charges.DEFAULT_SET))
    h = ff_cfg.get("hydrogen_mass_amu", 1.5)
    if h is not None and not h > 0:
        raise ConfigError(f"forcefield.hydrogen_mass_amu: {h!r} is out of range; must be > 0 or null")
    for metal, pair in (ff_cfg.get("metal_o_tfsi") or {}).items():
        if metal not in METAL_TYPES:
            raise ConfigError(f"forcefield.metal_o_tfsi: {metal!r} is not allowed; allowed values: {', '.join(map(repr, METAL_TYPES))}")
        unknown = sorted(set(pair) - PAIR_KEYS)
        if unknown:
            raise ConfigError(f"forcefield.metal_o_tfsi.{metal}.{unknown[0]}: unknown key; allowed keys: {', '.join(sorted(PAIR_KEYS))}")
        if not pair.get("sigma_nm", 0) > 0 or not pair.get("epsilon_kj_mol", -1) >= 0:
            raise ConfigError(f"forcefield.metal_o_tfsi.{metal}: needs sigma_nm > 0 and epsilon_kj_mol >= 0")
        c4 = pair.get("c4_kJ_nm4_per_mol", 0.0)
        if isinstance(c4, bool) or not isinstance(c4, (int, float)) or not math.isfinite(c4):
            raise ConfigError(f"forcefield.metal_o_tfsi.{metal}.c4_kJ_nm4_per_mol: {c4!r} is not a finite number")


def create_system(topology: app.Topology, ff_cfg: dict, positions_nm=None, nonbonded_method=app.PME, constraints=app.HBonds):
    """Build the System for `topology` (periodic box set unless nonbonded_method is NoCutoff).

    Returns (system, info) where info records the atom types, LJ type table and what was applied.
    `positions_nm` is needed only for a flexible (restrained) MOF. `constraints` other than HBonds is
    for exports and tests (the simulated system always constrains X-H bonds).
    """
    _check_cfg(ff_cfg)
    cutoff = float(ff_cfg.get("nonbonded_cutoff_nm", 1.0))
    periodic = nonbonded_method is not app.NoCutoff
    if periodic:
        box = topology.getPeriodicBoxVectors()
        if box is None:
            raise InputError("topology: no periodic box (CRYST1) for a PME system")
        shortest = min(box[k][k].value_in_unit(u.nanometer) for k in range(3))
        if cutoff > shortest / 2:
            raise ConfigError(
                f"forcefield.nonbonded_cutoff_nm: {cutoff} exceeds half the shortest box edge ({shortest / 2:.3f} nm)"
            )
    has_mof = any(r.name in MOF_RESIDUES for r in topology.residues())
    files = xml_files(ff_cfg, has_mof)
    ff = load_forcefield(files)
    recorder = _TypeRecorder()
    ff.registerGenerator(recorder)
    h_mass = ff_cfg.get("hydrogen_mass_amu", 1.5)
    try:
        system = ff.createSystem(
            topology,
            nonbondedMethod=nonbonded_method,
            nonbondedCutoff=cutoff * u.nanometer,
            constraints=constraints,
            hydrogenMass=None if h_mass is None else h_mass * u.amu,
        )
    except ValueError as exc:
        raise InputError(f"topology: force field templates do not match ({str(exc).splitlines()[0]})") from None
    types = recorder.types
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    atoms = list(topology.atoms())

    # per-type LJ from the XML (identical for every particle of a type)
    type_sigma, type_eps = {}, {}
    for i, t in enumerate(types):
        _, sig, eps = nb.getParticleParameters(i)
        type_sigma[t] = sig.value_in_unit(u.nanometer)
        type_eps[t] = eps.value_in_unit(u.kilojoule_per_mole)
    names = sorted(type_sigma)
    applied, pair_terms = {}, {}
    for metal, pair in sorted((ff_cfg.get("metal_o_tfsi") or {}).items()):
        present = METAL_TYPES[metal] in type_sigma and TFSI_O_TYPE in type_sigma
        c4 = float(pair.get("c4_kJ_nm4_per_mol", 0.0))
        applied[metal] = {"sigma_nm": pair["sigma_nm"], "epsilon_kj_mol": pair["epsilon_kj_mol"], "c4_kJ_nm4_per_mol": c4, "applied": present}
        if present:
            pair_terms[METAL_TYPES[metal]] = (float(pair["sigma_nm"]), float(pair["epsilon_kj_mol"]), c4)

    # ionic and MOF charge scaling, then Coulomb-only NonbondedForce
    scale = float(ff_cfg.get("charge_scale", DEFAULT_SCALES["charge_scale"]))
    mof_scale = float(ff_cfg.get("mof_charge_scale", DEFAULT_SCALES["mof_charge_scale"]))
    scaled = np.array([a.residue.name in ION_RESIDUES for a in atoms])
    particle_scale = np.where(scaled, scale, [mof_scale if a.residue.name in MOF_RESIDUES else 1.0 for a in atoms])
    # another published MOF charge set (forcefields/mof_charges.py): q_new / q_xml folded into the scale,
    # so the MOF's scaled 1-4 exceptions follow it
    charge_set = ff_cfg.get("mof_charges", mof_charges.DEFAULT_SET)
    mof_types = {types[a.index]: a.element.symbol for a in atoms if a.residue.name in MOF_RESIDUES}
    set_charges = mof_charges.type_charges(charge_set, mof_types)
    mof_atoms = [a for a in atoms if a.residue.name in MOF_RESIDUES] if set_charges else []
    for a in mof_atoms:
        q_xml = nb.getParticleParameters(a.index)[0].value_in_unit(u.elementary_charge)
        if q_xml == 0.0:
            raise InputError(f"forcefields/mof.xml: type {types[a.index]} has charge 0; forcefield.mof_charges cannot rescale it")
        particle_scale[a.index] *= set_charges[types[a.index]] / q_xml
    for i in range(system.getNumParticles()):
        q, sig, _ = nb.getParticleParameters(i)
        nb.setParticleParameters(i, q * float(particle_scale[i]), sig, 0.0)
    nb.setUseDispersionCorrection(False)

    exclusions = []
    for k in range(nb.getNumExceptions()):
        i, j, qq, sig, eps = nb.getExceptionParameters(k)
        exclusions.append((i, j))
        qq = qq * float(particle_scale[i] * particle_scale[j])
        if eps.value_in_unit(u.kilojoule_per_mole) != 0.0:
            sig = math.sqrt(type_sigma[types[i]] * type_sigma[types[j]])
        nb.setExceptionParameters(k, i, j, qq, sig, eps)

    def nonbonded(energy: str, name: str, params: tuple[str, ...]) -> openmm.CustomNonbondedForce:
        force = openmm.CustomNonbondedForce(energy)
        force.setName(name)
        for p in params:
            force.addPerParticleParameter(p)
        if periodic:
            force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
            force.setCutoffDistance(cutoff)
            force.setUseLongRangeCorrection(True)
            force.setUseSwitchingFunction(nb.getUseSwitchingFunction())
            force.setSwitchingDistance(nb.getSwitchingDistance())
        else:
            force.setNonbondedMethod(openmm.CustomNonbondedForce.NoCutoff)
        return force

    def add_exclusions(force: openmm.CustomNonbondedForce) -> None:
        # identical to the NonbondedForce exceptions: OpenMM refuses a Context otherwise
        for i, j in exclusions:
            force.addExclusion(i, j)

    coeff = {t: lj_particle_coefficients(type_sigma[t], type_eps[t]) for t in names}
    lj = nonbonded(LJ_ENERGY, "LJGeometric", ("a", "b"))
    for t in types:
        lj.addParticle(list(coeff[t]))
    add_exclusions(lj)
    system.addForce(lj)

    # MOF-MOF pairs of a rigid slab stay in: skipping them costs more than it saves (measured,
    # benchmarks/lj_forms.py, OpenMM 8.6 CPU: interaction groups {mobile}x{all} 2.9x slower; exclusions
    # must then be NonbondedForce exceptions too, ~240k for the default CPE slab)
    mof_idx = [a.index for a in atoms if a.residue.name in MOF_RESIDUES]
    rigid = bool(ff_cfg.get("rigid_mof", True))

    if pair_terms:
        # (pair term - geometric term) for metal-O(TFSI) pairs only; sigma/eps sources: forcefield.metal_o_tfsi
        # or the calibration (forcefields/calibration.py), c4 the 12-6-4 ion-induced dipole (default 0)
        o_geo = coeff[TFSI_O_TYPE]
        delta = {}
        for t, (sig, eps, c4) in pair_terms.items():
            a_geo, b_geo = (coeff[t][0] * o_geo[0], coeff[t][1] * o_geo[1])
            delta[t] = (4 * eps * sig**12 - a_geo, 4 * eps * sig**6 - b_geo, c4)
        corr = nonbonded(PAIR_ENERGY, "LJPairOverrides", ("da", "db", "c4"))
        for t in types:
            corr.addParticle(list(delta.get(t, (0.0, 0.0, 0.0))))
        add_exclusions(corr)
        metals = [i for i, t in enumerate(types) if t in delta]
        oxygens = [i for i, t in enumerate(types) if t == TFSI_O_TYPE]
        corr.addInteractionGroup(metals, oxygens)
        system.addForce(corr)

    if mof_idx and rigid:
        mof_set = set(mof_idx)
        for i in mof_idx:
            system.setParticleMass(i, 0.0)
        for k in reversed(range(system.getNumConstraints())):
            i, j, _ = system.getConstraintParameters(k)
            if i in mof_set or j in mof_set:
                system.removeConstraint(k)
    elif mof_idx:
        if positions_nm is None:
            raise InputError("positions: needed to restrain a flexible MOF (forcefield.rigid_mof false)")
        tether = openmm.CustomExternalForce("0.5*k_mof*periodicdistance(x, y, z, x0, y0, z0)^2")
        tether.setName("MofTether")
        tether.addGlobalParameter("k_mof", MOF_RESTRAINT_K)
        for p in ("x0", "y0", "z0"):
            tether.addPerParticleParameter(p)
        for i in mof_idx:
            tether.addParticle(i, [float(x) for x in np.asarray(positions_nm)[i]])
        system.addForce(tether)

    net = sum(nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(system.getNumParticles()))
    info = {
        "xml_files": [str(f) for f in files],
        "atom_types": names,
        "type_sigma_nm": type_sigma,
        "type_epsilon_kj_mol": type_eps,
        "particle_types": types,
        "metal_o_tfsi": applied,
        "charge_scale": scale,
        "mof_charge_scale": mof_scale,
        "mof_charges": charge_set,
        "mof_type_charges_e": set_charges,
        "net_charge_e": net,
        "mof_atom_indices": mof_idx,
        "rigid_mof": rigid,
    }
    return system, info


def parametrise(box_pdb, ff_cfg: dict, out_dir) -> dict:
    """Parametrise `box_pdb`; write out_dir/system.xml, topology.pdb and forcefield.json.

    Returns the forcefield.json record.
    """
    box_pdb = Path(box_pdb)
    if not box_pdb.is_file():
        raise InputError(f"{box_pdb}: box PDB not found")
    pdb = app.PDBFile(str(box_pdb))
    positions = pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    system, info = create_system(pdb.topology, ff_cfg, positions)
    if abs(info["net_charge_e"]) > 1e-6:
        raise InputError(f"{box_pdb}: net charge {info['net_charge_e']:.6f} e after parametrisation, expected 0")
    out_dir = Path(out_dir)
    h_mass = ff_cfg.get("hydrogen_mass_amu", 1.5)
    record = {
        "xml_files": {Path(f).name: sha256_file(f) for f in info["xml_files"]},
        "sodium": ff_cfg.get("sodium", "aqvist"),
        "charge_scale": info["charge_scale"],
        "charge_scaled_residues": list(ION_RESIDUES),
        "mof_charge_scale": info["mof_charge_scale"],
        "mof_charge_scaled_residues": list(MOF_RESIDUES),
        "mof_charges": info["mof_charges"] if info["mof_atom_indices"] else None,
        "mof_charges_source": mof_charges.SOURCES[info["mof_charges"]] if info["mof_atom_indices"] else None,
        "mixing": "geometric",
        "lj_force": (
            "CustomNonbondedForce 'LJGeometric' (per-particle a1*a2/r^12 - b1*b2/r^6) "
            "+ 'LJPairOverrides' (metal-O(TFSI) pair terms, C4); NonbondedForce is Coulomb only"
        ),
        "atom_types": info["atom_types"],
        "metal_o_tfsi": info["metal_o_tfsi"],
        "hydrogen_mass_amu": h_mass,
        "hmr": h_mass is not None,
        "constraints": "HBonds",
        "nonbonded_method": "PME",
        "nonbonded_cutoff_nm": float(ff_cfg.get("nonbonded_cutoff_nm", 1.0)),
        "dispersion_correction": True,
        "has_mof_slab": bool(info["mof_atom_indices"]),
        "rigid_mof": info["rigid_mof"],
        "mof_restraint_k_kj_mol_nm2": None if info["rigid_mof"] or not info["mof_atom_indices"] else MOF_RESTRAINT_K,
        "mof_atom_indices": info["mof_atom_indices"],
        "n_atoms": system.getNumParticles(),
        "net_charge_e": info["net_charge_e"],
        "provenance": provenance(config={"forcefield": ff_cfg}, forcefield_files=info["xml_files"], inputs=[box_pdb]),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "system.xml") as t_sys, atomic_path(out_dir / "topology.pdb") as t_top:
        Path(t_sys).write_text(openmm.XmlSerializer.serialize(system))
        with open(t_top, "w") as fh:
            app.PDBFile.writeFile(pdb.topology, positions * u.nanometer, fh)
        write_json_atomic(out_dir / "forcefield.json", record)
    return record
