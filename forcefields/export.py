"""Export a parametrised system to GROMACS (.top/.gro) and Amber (.prmtop/.inpcrd) through ParmEd.

ParmEd cannot read a CustomNonbondedForce, so the geometric LJ ('LJGeometric', per-particle product
form, and 'LJPairOverrides') is translated into what both formats represent natively:
* per-type sigma/epsilon, as create_system records them, with the GEOMETRIC combining rule (GROMACS
  `comb-rule 3`; Amber prmtop stores explicit A/B coefficients per type pair, which ParmEd fills
  geometrically);
* every applied metal-O(TFSI) pair term (forcefield.metal_o_tfsi) as an explicit pair: GROMACS
  [ nonbond_params ], Amber NBFIX-style coefficients.
Not representable and therefore left out: a rigid MOF (zero masses: the exported masses are the
element masses, freeze the MOF with the engine's own means, e.g. GROMACS freezegrps), the flexible-
MOF tether (a position restraint) and a nonzero 12-6-4 C4 term of a metal-O pair. All are recorded
in export.json.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as u

from spemd.errors import InputError
from spemd.files import atomic_path, write_json_atomic
from spemd.forcefields.library import FF_DIR
from spemd.forcefields.parametrise import METAL_TYPES, TFSI_O_TYPE, create_system
from spemd.provenance import provenance, sha256_file

KJ_PER_KCAL = 4.184


def _load(params_dir: Path):
    for name in ("system.xml", "topology.pdb", "forcefield.json"):
        if not (params_dir / name).is_file():
            raise InputError(f"{params_dir / name}: not found (run parametrise first)")
    system = openmm.XmlSerializer.deserialize((params_dir / "system.xml").read_text())
    pdb = app.PDBFile(str(params_dir / "topology.pdb"))
    meta = json.loads((params_dir / "forcefield.json").read_text())
    return system, pdb, meta


def to_structure(params_dir):
    """A ParmEd Structure equivalent to the parametrised system, geometric combining, with NBFIX."""
    import parmed

    params_dir = Path(params_dir)
    _, pdb, meta = _load(params_dir)
    # Rebuild without constraints (the formats need every bond's parameters; ParmEd drops constrained
    # bonds) from the very XML files and settings recorded in forcefield.json.
    for name, digest in meta["xml_files"].items():
        if sha256_file(FF_DIR / name) != digest:
            raise InputError(f"{FF_DIR / name}: changed since {params_dir} was parametrised; parametrise again")
    ff_cfg = meta["provenance"]["config"]["forcefield"]
    positions = pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    system, info = create_system(pdb.topology, ff_cfg, positions, constraints=None)
    names = info["atom_types"]
    diag = [(info["type_sigma_nm"][t], info["type_epsilon_kj_mol"][t]) for t in names]
    index = {t: k for k, t in enumerate(names)}
    ptype = [index[t] for t in info["particle_types"]]

    # a plain System parmed understands: LJ back in NonbondedForce, custom forces removed
    std = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    nb = next(f for f in std.getForces() if isinstance(f, openmm.NonbondedForce))
    for i in range(std.getNumParticles()):
        q, _, _ = nb.getParticleParameters(i)
        sig, eps = diag[ptype[i]]
        nb.setParticleParameters(i, q, sig, eps)
    for k in reversed(range(std.getNumForces())):
        if isinstance(std.getForce(k), (openmm.CustomNonbondedForce, openmm.CustomExternalForce)):
            std.removeForce(k)
    for i, atom in enumerate(pdb.topology.atoms()):
        if std.getParticleMass(i).value_in_unit(u.dalton) == 0.0:
            std.setParticleMass(i, atom.element.mass)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        struct = parmed.openmm.load_topology(pdb.topology, std, xyz=pdb.getPositions(asNumpy=True))
    struct.combining_rule = "geometric"

    # one ParmEd atom type per force-field type, named as in the XML
    ptypes = {}
    for k, name in enumerate(names):
        sig, eps = diag[k]
        t = parmed.AtomType(name, None, 0.0)
        t.set_lj_params(eps / KJ_PER_KCAL, sig * 10 * 2 ** (1 / 6) / 2)
        ptypes[name] = t
    for atom, k in zip(struct.atoms, ptype):
        t = ptypes[names[k]]
        t.mass, t.atomic_number = atom.mass, atom.atomic_number
        atom.atom_type, atom.type = t, t.name
    pairs = []
    for metal, pair in sorted(info["metal_o_tfsi"].items()):
        if not pair["applied"]:
            continue
        t1, t2 = METAL_TYPES[metal], TFSI_O_TYPE
        sig, eps = pair["sigma_nm"], pair["epsilon_kj_mol"]
        rmin = sig * 10 * 2 ** (1 / 6)
        ptypes[t1].add_nbfix(t2, rmin, eps / KJ_PER_KCAL)
        ptypes[t2].add_nbfix(t1, rmin, eps / KJ_PER_KCAL)
        pairs.append({"types": [t1, t2], "sigma_nm": sig, "epsilon_kj_mol": eps, "c4_kJ_nm4_per_mol": pair["c4_kJ_nm4_per_mol"]})
    return struct, meta, pairs


def _record(params_dir, meta, pairs, files):
    return {
        "source": str(params_dir),
        "files": files,
        "combining_rule": "geometric",
        "explicit_pairs": pairs,
        "not_exported": [
            note
            for note, applies in (
                ("zero masses of the rigid MOF (element masses written; freeze it in the engine)", meta.get("has_mof_slab") and meta.get("rigid_mof")),
                ("harmonic tether of the flexible MOF", meta.get("mof_restraint_k_kj_mol_nm2") is not None),
                ("12-6-4 C4 term of metal-O(TFSI) pairs", any(p["c4_kJ_nm4_per_mol"] != 0 for p in pairs)),
            )
            if applies
        ],
        "provenance": provenance(inputs=[Path(params_dir) / "system.xml", Path(params_dir) / "forcefield.json"]),
    }


def export_gromacs(params_dir, out_dir) -> dict:
    """Write out_dir/system.top and system.gro (comb-rule 3 = geometric; overrides in nonbond_params)."""
    struct, meta, pairs = to_structure(params_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "system.top") as t_top, atomic_path(out_dir / "system.gro") as t_gro:
        struct.save(str(t_top), format="gromacs", overwrite=True, combine="all")
        struct.save(str(t_gro), format="gro", overwrite=True)
        record = _record(params_dir, meta, pairs, ["system.top", "system.gro"])
        write_json_atomic(out_dir / "export.json", record)
    return record


def export_amber(params_dir, out_dir) -> dict:
    """Write out_dir/system.prmtop and system.inpcrd (explicit geometric A/B coefficients, NBFIX)."""
    struct, meta, pairs = to_structure(params_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "system.prmtop") as t_top, atomic_path(out_dir / "system.inpcrd") as t_crd:
        struct.save(str(t_top), format="amber", overwrite=True)
        struct.save(str(t_crd), format="rst7", overwrite=True)
        record = _record(params_dir, meta, pairs, ["system.prmtop", "system.inpcrd"])
        write_json_atomic(out_dir / "export.json", record)
    return record
