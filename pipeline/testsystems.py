"""Small params/ folders for tests and benchmarks of the engine (TIP3P water, optional fixed slab).

They have the layout the force-field step writes (``system.xml``, ``topology.pdb``,
``forcefield.json``) so that :mod:`pipeline.engine` runs on them unchanged. Only openmm and numpy are
needed, so the GPU benchmark can use them on a bare machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit


def water_params(
    out_dir,
    box_nm: float = 1.3,
    cutoff_nm: float = 0.5,
    hydrogen_mass_amu: float | None = None,
    slab_grid: int = 0,
    slab_sigma_nm: float = 0.3,
    slab_layers: int = 2,
    height_nm: float | None = None,
) -> Path:
    """Write a TIP3P box (PME, HBonds, rigid water) as a params folder; return its path.

    The box is `box_nm` wide in x and y and `height_nm` (default: `box_nm`, a cube) high.

    ``slab_grid = n > 0`` adds `slab_layers` n x n layers (0.3 nm apart, centred on z = box/2) of
    massless, uncharged LJ atoms (residue/element Cu) spanning x and y, with no bonds between them, listed in forcefield.json as
    ``mof_atom_indices`` with ``has_mof_slab: true``; waters near the layer are removed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ff = app.ForceField("amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    height = float(box_nm if height_nm is None else height_nm)
    modeller.addSolvent(ff, model="tip3p", boxSize=openmm.Vec3(box_nm, box_nm, height) * unit.nanometer)
    slab_xyz = np.zeros((0, 3))
    if slab_grid > 0:
        spacing = box_nm / slab_grid
        g = (np.arange(slab_grid) + 0.5) * spacing
        zs = height / 2 + 0.3 * (np.arange(slab_layers) - (slab_layers - 1) / 2)
        slab_xyz = np.array([[x, y, z] for z in zs for x in g for y in g])
        pos = modeller.getPositions().value_in_unit(unit.nanometer)
        doomed = []
        for res in modeller.topology.residues():
            for atom in res.atoms():
                d = np.asarray(pos[atom.index]) - slab_xyz
                period = np.array([box_nm, box_nm, height])
                d -= period * np.round(d / period)
                if (np.linalg.norm(d, axis=1) < 0.32).any():
                    doomed.append(res)
                    break
        modeller.delete(doomed)
    system = ff.createSystem(
        modeller.topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=cutoff_nm * unit.nanometer,
        constraints=app.HBonds,
        rigidWater=True,
        hydrogenMass=hydrogen_mass_amu * unit.amu if hydrogen_mass_amu else None,
    )
    topology = modeller.topology
    positions = list(modeller.getPositions().value_in_unit(unit.nanometer))
    slab_indices = []
    if slab_grid > 0:
        nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
        chain = topology.addChain()
        cu = app.Element.getBySymbol("Cu")
        for xyz in slab_xyz:
            res = topology.addResidue("CU", chain)
            topology.addAtom("CU", cu, res)
            slab_indices.append(system.addParticle(0.0))  # massless = fixed
            nb.addParticle(0.0, slab_sigma_nm, 0.5)
            positions.append(openmm.Vec3(*xyz))
    box = [openmm.Vec3(box_nm, 0, 0), openmm.Vec3(0, box_nm, 0), openmm.Vec3(0, 0, height)]
    system.setDefaultPeriodicBoxVectors(*box)
    topology.setPeriodicBoxVectors(box * unit.nanometer)
    (out_dir / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    with open(out_dir / "topology.pdb", "w") as fh:
        app.PDBFile.writeFile(topology, positions * unit.nanometer, fh, keepIds=False)
    meta = {
        "xml_files": ["amber14/tip3p.xml"],
        "hmr": hydrogen_mass_amu,
        "has_mof_slab": bool(slab_indices),
        "mof_atom_indices": slab_indices,
    }
    (out_dir / "forcefield.json").write_text(json.dumps(meta, indent=2))
    return out_dir
