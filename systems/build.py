"""Periodic boxes of PEO/NaTFSI, optionally on an M3(BTC)2 slab, packed with packmol.

Plain electrolyte: a cubic box at build.start_density_g_cm3. Composite: the box's x/y are the slab's
(periodic in x/y), the slab fills z in [0, thickness] and polymer + salt fill the gap above it; through
the periodicity in z the gap touches both slab faces, so polymer sits on both. The number of chains is
then set by the MOF mass fraction (spec `chains` is ignored and that is recorded).

Packing: packmol's `pbc` keeps molecules apart across the faces, but (packmol 21) it also confines
every atom to the box, so each chain is grown (systems.molecules.peo_chain) to fit the packing region:
short chains in any orientation, long ones near their growth orientation (see build_box). The slab is not given to packmol: the packing region (the gap)
starts `packing_tolerance_nm` above the slab's top atoms and ends the same distance below the periodic
image of its bottom atoms. packmol handles start densities up to about 0.5 g/cm3 for these chains
(measured); NPT compresses the box afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as u
from scipy.spatial import cKDTree

from pipeline import units
from pipeline.errors import BuildError, ConfigError, one_of
from pipeline.files import atomic_path, write_json_atomic
from pipeline.provenance import provenance
from systems import molecules

MOF_METALS = ("FeNi", "Fe", "Ni", "Cu")
MOF_RESIDUES = ("BTC", "FE", "NI", "CU")
MAX_MOF_WT_PERCENT = 50.0
WT_TOLERANCE_PERCENT = 0.5
# Chains are grown to fit inside a sphere of EXTENT_FRACTION x the packing region's shortest side.
EXTENT_FRACTION = 0.9
# Smallest cube (nm) a coil of n EO units is grown into without much backtracking: 0.4 sqrt(n).
COIL_NM_PER_SQRT_EO = 0.4
# Rotation freedom (degrees, about each axis) of chains grown to fit the region's shape.
CHAIN_ROTATION_DEG = 15.0
# Non-bonded atoms (more than three bonds apart) closer than this mean a failed packing.
MIN_PAIR_NM = 0.1
PACKMOL_TIMEOUT_S = 900


def _packmol_binary() -> str:
    exe = shutil.which("packmol") or str(Path(os.sys.executable).with_name("packmol"))
    if not Path(exe).is_file():
        raise BuildError("packmol: executable not found (pip install packmol)")
    return exe


def salt_pairs(total_eo: int, eo_per_na: float) -> int:
    """NaTFSI pairs for `total_eo` ether repeat units at EO:Na = eo_per_na (at least one)."""
    return max(1, int(round(total_eo / eo_per_na)))


def peo_mass_amu(n_eo: int) -> float:
    """Mass of CH3-O-(CH2CH2O)n-CH3: C(2n+2) H(4n+6) O(n+1)."""
    m = lambda s: app.element.get_by_symbol(s).mass.value_in_unit(u.dalton)  # noqa: E731
    return (2 * n_eo + 2) * m("C") + (4 * n_eo + 6) * m("H") + (n_eo + 1) * m("O")


def salt_mass_amu() -> float:
    return molecules.sodium().mass_amu + molecules.tfsi().mass_amu


def _check_spec(name: str, spec: dict, build_cfg: dict, cutoff_nm: float) -> None:
    key = f"systems.{name}"
    eo = spec.get("eo_per_chain")
    if not isinstance(eo, int) or isinstance(eo, bool) or eo < 2:
        raise ConfigError(f"{key}.eo_per_chain: {eo!r} is out of range; must be an integer >= 2")
    if not spec.get("eo_per_na", 0) > 0:
        raise ConfigError(f"{key}.eo_per_na: {spec.get('eo_per_na')!r} is out of range; must be > 0")
    wt = spec.get("mof_wt_percent", 0)
    if not 0 <= wt < MAX_MOF_WT_PERCENT:
        raise ConfigError(f"{key}.mof_wt_percent: {wt!r} is out of range; must be >= 0 and < {MAX_MOF_WT_PERCENT:g}")
    if wt > 0:
        metal = spec.get("mof_metal", "FeNi")
        if metal not in MOF_METALS:
            raise ConfigError(one_of(f"{key}.mof_metal", metal, MOF_METALS))
    else:
        chains = spec.get("chains")
        if not isinstance(chains, int) or isinstance(chains, bool) or chains < 1:
            raise ConfigError(f"{key}.chains: {chains!r} is out of range; must be an integer >= 1 when mof_wt_percent is 0")
    for k in ("start_density_g_cm3", "packing_tolerance_nm"):
        if not build_cfg.get(k, 1) > 0:
            raise ConfigError(f"build.{k}: {build_cfg.get(k)!r} is out of range; must be > 0")
    if not cutoff_nm > 0:
        raise ConfigError(f"forcefield.nonbonded_cutoff_nm: {cutoff_nm!r} is out of range; must be > 0")


def composite_chains(mof_mass_amu: float, wt_percent: float, eo_per_chain: int, eo_per_na: float, key: str) -> dict:
    """Chain lengths and salt count that put the MOF at `wt_percent` of the box mass (+/- 0.5 wt%).

    Whole chains are preferred; if none reaches the window, one chain may be shorter (>= 2 EO).
    """
    w = wt_percent / 100.0
    other_target = mof_mass_amu * (1.0 - w) / w
    m_salt = salt_mass_amu()

    def achieved(chain_eo):
        total_eo = sum(chain_eo)
        other = sum(peo_mass_amu(n) for n in chain_eo) + salt_pairs(total_eo, eo_per_na) * m_salt
        return 100.0 * mof_mass_amu / (mof_mass_amu + other)

    per_chain = peo_mass_amu(eo_per_chain) + m_salt * eo_per_chain / eo_per_na
    n_est = max(1, int(round(other_target / per_chain)))
    candidates = [[eo_per_chain] * n for n in range(max(1, n_est - 2), n_est + 3)]
    best = min(candidates, key=lambda c: abs(achieved(c) - wt_percent))
    if abs(achieved(best) - wt_percent) > WT_TOLERANCE_PERCENT:
        shorts = [[eo_per_chain] * n + [m] for n in range(max(0, n_est - 2), n_est + 2) for m in range(2, eo_per_chain)]
        best = min(candidates + shorts, key=lambda c: abs(achieved(c) - wt_percent))
    err = achieved(best) - wt_percent
    if abs(err) > WT_TOLERANCE_PERCENT:
        raise BuildError(
            f"{key}.mof_wt_percent: {wt_percent!r} cannot be reached within {WT_TOLERANCE_PERCENT} wt% "
            f"(closest {achieved(best):.2f}); change mof_cells or eo_per_chain"
        )
    return {"chain_eo": best, "n_salt": salt_pairs(sum(best), eo_per_na), "wt_percent": achieved(best)}


def _write_xyz_pdb(path: Path, mol_top: app.Topology, xyz_nm: np.ndarray) -> None:
    """Minimal PDB (coordinates only) that packmol reads."""
    lines = []
    for i, (atom, p) in enumerate(zip(mol_top.atoms(), units.nm_to_angstrom(np.asarray(xyz_nm)))):
        lines.append(
            "HETATM%5d %-4s %3s A%4d    %8.3f%8.3f%8.3f  1.00  0.00          %2s"
            % (i % 100000, atom.name[:4], atom.residue.name[:3], 1, p[0], p[1], p[2], atom.element.symbol)
        )
    path.write_text("\n".join(lines) + "\nEND\n")


def _run_packmol(structures, lo_nm, hi_nm, tol_nm, seed, key) -> np.ndarray:
    """Pack `structures` = [(Molecule, number, constraint_lines)] into the periodic box [lo, hi] (nm).

    Returns the packed positions (nm) in input order, copies of a structure consecutive.
    """
    lo_a, hi_a = units.nm_to_angstrom(np.asarray(lo_nm)), units.nm_to_angstrom(np.asarray(hi_nm))
    with tempfile.TemporaryDirectory(prefix="spemd_packmol_") as tmp:
        tmp = Path(tmp)
        inp = [
            f"tolerance {units.nm_to_angstrom(tol_nm):.4f}",
            # packmol takes positive seeds (-1 means "from the clock")
            f"seed {seed + 1}",
            "filetype pdb",
            "output packed.pdb",
            # pbc also confines every atom to this box (packmol 21)
            "pbc " + " ".join(f"{x:.4f}" for x in (*lo_a, *hi_a)),
        ]
        n_atoms = 0
        for k, (mol, number, constraints) in enumerate(structures):
            _write_xyz_pdb(tmp / f"s{k}.pdb", mol.topology, mol.positions_nm)
            inp += [f"structure s{k}.pdb", f"  number {number}", *[f"  {c}" for c in constraints], "end structure"]
            n_atoms += number * mol.topology.getNumAtoms()
        (tmp / "pack.inp").write_text("\n".join(inp) + "\n")
        advice = "lower build.start_density_g_cm3 (packmol reaches about 0.5 g/cm3 for PEO/NaTFSI) or build.packing_tolerance_nm"
        try:
            with open(tmp / "pack.inp") as stdin:
                proc = subprocess.run(
                    [_packmol_binary()], stdin=stdin, cwd=tmp, capture_output=True, text=True, timeout=PACKMOL_TIMEOUT_S
                )
        except subprocess.TimeoutExpired:
            raise BuildError(f"{key}: packmol found no packing within {PACKMOL_TIMEOUT_S} s; {advice}") from None
        out = tmp / "packed.pdb"
        if proc.returncode != 0 or not out.is_file():
            raise BuildError(f"{key}: packmol found no packing (exit code {proc.returncode}); {advice}")
        xyz = [
            (float(line[30:38]), float(line[38:46]), float(line[46:54]))
            for line in out.read_text().splitlines()
            if line.startswith(("ATOM", "HETATM"))
        ]
    if len(xyz) != n_atoms:
        raise BuildError(f"{key}: packmol wrote {len(xyz)} atoms, expected {n_atoms}")
    return units.angstrom_to_nm(np.array(xyz))


def _append(top: app.Topology, mol_top: app.Topology) -> None:
    """Copy `mol_top` into `top` as a new chain."""
    chain = top.addChain()
    mapping = {}
    for res in mol_top.residues():
        new_res = top.addResidue(res.name, chain)
        for atom in res.atoms():
            mapping[atom] = top.addAtom(atom.name, atom.element, new_res)
    for a, b in mol_top.bonds():
        top.addBond(mapping[a], mapping[b])


def min_nonbonded_distance_nm(topology: app.Topology, xyz_nm: np.ndarray, box_nm, within_nm: float = 0.5):
    """Shortest minimum-image distance between atoms more than three bonds apart (inf if none within)."""
    n = len(xyz_nm)
    neighbours = [set() for _ in range(n)]
    for a, b in topology.bonds():
        neighbours[a.index].add(b.index)
        neighbours[b.index].add(a.index)
    box = np.asarray(box_nm, dtype=float)
    tree = cKDTree(np.mod(xyz_nm, box), boxsize=box)
    pairs = tree.query_pairs(within_nm, output_type="ndarray")
    if len(pairs) == 0:
        return float("inf")
    d = xyz_nm[pairs[:, 0]] - xyz_nm[pairs[:, 1]]
    d -= np.round(d / box) * box
    r = np.linalg.norm(d, axis=1)
    best = float("inf")
    for k in np.argsort(r):
        i, j = pairs[k]
        one = neighbours[i]
        two = set().union(*(neighbours[x] for x in one)) if one else set()
        three = set().union(*(neighbours[x] for x in two)) if two else set()
        if j not in one | two | three:
            best = float(r[k])
            break
    return best


def build_box(name: str, spec: dict, build_cfg: dict, seed: int, out_dir, cutoff_nm: float) -> dict:
    """Build system `name` from its config `spec`; write out_dir/box.pdb and composition.json.

    Returns the composition record (also written to composition.json).
    """
    _check_spec(name, spec, build_cfg, cutoff_nm)
    key = f"systems.{name}"
    out_dir = Path(out_dir)
    eo = int(spec["eo_per_chain"])
    eo_per_na = float(spec["eo_per_na"])
    wt = float(spec.get("mof_wt_percent", 0))
    density = float(build_cfg.get("start_density_g_cm3", 0.8))
    tol = float(build_cfg.get("packing_tolerance_nm", 0.2))
    rng = np.random.default_rng(seed)
    na, tfsi = molecules.sodium(), molecules.tfsi()

    slab = None
    if wt > 0:
        from systems.mof import build_slab

        cells = tuple(spec.get("mof_cells", (1, 1, 1)))
        slab = build_slab(spec.get("mof_metal", "FeNi"), cells)
        plan = composite_chains(slab.mass_amu, wt, eo, eo_per_na, key)
        chain_eo, n_salt = plan["chain_eo"], plan["n_salt"]
        other_mass = sum(peo_mass_amu(n) for n in chain_eo) + n_salt * salt_mass_amu()
        lx, ly = slab.box_x_nm, slab.box_y_nm
        if min(lx, ly) <= 2.0 * cutoff_nm:
            raise BuildError(
                f"{key}.mof_cells: slab x/y {lx:.3f} x {ly:.3f} nm is not above 2 x "
                f"forcefield.nonbonded_cutoff_nm ({cutoff_nm}); use more cells in x and y"
            )
        gap = units.volume_nm3_for_density(other_mass, density) / (lx * ly)
        z_lo = slab.thickness_nm + tol
        box = np.array([lx, ly, z_lo + gap + tol])
        region_lo, region_hi = np.array([0.0, 0.0, z_lo]), np.array([lx, ly, z_lo + gap])
    else:
        chain_eo = [eo] * int(spec["chains"])
        n_salt = salt_pairs(sum(chain_eo), eo_per_na)
        other_mass = sum(peo_mass_amu(n) for n in chain_eo) + n_salt * salt_mass_amu()
        edge = units.volume_nm3_for_density(other_mass, density) ** (1.0 / 3.0)
        if edge <= 2.0 * cutoff_nm:
            raise BuildError(
                f"{key}.chains: cubic box edge {edge:.3f} nm is not above 2 x forcefield.nonbonded_cutoff_nm "
                f"({cutoff_nm}); use more chains or a shorter cutoff"
            )
        box = np.full(3, edge)
        region_lo, region_hi = np.zeros(3), box.copy()
    if box[2] <= 2.0 * cutoff_nm:
        raise BuildError(f"{key}.mof_wt_percent: box height {box[2]:.3f} nm is not above 2 x forcefield.nonbonded_cutoff_nm ({cutoff_nm})")

    # Packing region = packmol's periodic box. With a slab it is the gap above it: the slab is left out
    # of packmol, being at least `tol` away in z on both sides (through the periodic image in z).
    # A chain whose coil fits a cube of EXTENT_FRACTION x (shortest side)/sqrt(3) is packed freely (any
    # rotation keeps it inside); a longer one is grown to fit EXTENT_FRACTION of the region along each
    # axis and packed with its rotation held near its growth orientation.
    region = region_hi - region_lo
    side = EXTENT_FRACTION * float(np.min(region)) / np.sqrt(3.0)
    chains, constraints = [], []
    for n in chain_eo:
        free = side >= COIL_NM_PER_SQRT_EO * np.sqrt(n)
        extent = np.full(3, side) if free else EXTENT_FRACTION * region
        chains.append(molecules.peo_chain(n, rng, max_extent_nm=extent))
        constraints.append([] if free else [f"constrain_rotation {ax} 0. {CHAIN_ROTATION_DEG}" for ax in "xyz"])
    structures = [(c, 1, cons) for c, cons in zip(chains, constraints)] + [(na, n_salt, []), (tfsi, n_salt, [])]
    packed = _run_packmol(structures, region_lo, region_hi, tol, seed, key)
    xyz = packed if slab is None else np.vstack([slab.positions_nm, packed])

    top = app.Topology()
    if slab is not None:
        _append(top, slab.topology)
    for c in chains:
        _append(top, c.topology)
    for mol in [na] * n_salt + [tfsi] * n_salt:
        _append(top, mol.topology)
    top.setPeriodicBoxVectors([[box[0], 0, 0], [0, box[1], 0], [0, 0, box[2]]] * u.nanometer)

    d_min = min_nonbonded_distance_nm(top, xyz, box)
    if d_min < MIN_PAIR_NM:
        raise BuildError(f"{key}: packed box has non-bonded atoms {d_min:.3f} nm apart (< {MIN_PAIR_NM}); lower build.start_density_g_cm3")

    masses = {
        "peo": sum(peo_mass_amu(n) for n in chain_eo),
        "salt": n_salt * salt_mass_amu(),
        "mof": slab.mass_amu if slab is not None else 0.0,
    }
    masses["total"] = sum(masses.values())
    volume = float(np.prod(box))
    record = {
        "system": name,
        "seed": seed,
        "counts": {
            "atoms": top.getNumAtoms(),
            "peo_chains": len(chain_eo),
            "chain_eo": chain_eo,
            "short_chain_eo": chain_eo[-1] if chain_eo[-1] != eo else None,
            "ether_repeat_units": sum(chain_eo),
            "na": n_salt,
            "tfsi": n_salt,
            "mof_atoms": slab.topology.getNumAtoms() if slab is not None else 0,
            "mof_metal_atoms": _count_metals(slab) if slab is not None else {},
        },
        "eo_per_na_requested": eo_per_na,
        "eo_per_na_achieved": sum(chain_eo) / n_salt,
        "masses_amu": masses,
        "mof_wt_percent_requested": wt,
        "mof_wt_percent_achieved": 100.0 * masses["mof"] / masses["total"],
        "chains_requested": spec.get("chains"),
        "chains_ignored": slab is not None and spec.get("chains") is not None,
        "has_mof_slab": slab is not None,
        "mof": None
        if slab is None
        else {"metal": slab.metal, "cells": list(slab.cells), "thickness_nm": slab.thickness_nm, "z_range_nm": [0.0, slab.thickness_nm]},
        "box_nm": box.tolist(),
        "packing_region_nm": [region_lo.tolist(), region_hi.tolist()],
        "start_density_g_cm3": density,
        "box_density_g_cm3": units.density_g_per_cm3(masses["total"], volume),
        "packing_tolerance_nm": tol,
        "min_nonbonded_distance_nm": d_min,
        "provenance": provenance(
            seed=seed,
            config={"system": name, "spec": spec, "build": build_cfg, "nonbonded_cutoff_nm": cutoff_nm},
            extra={"packmol_seed": seed + 1},
        ),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "box.pdb") as tmp_pdb:
        with open(tmp_pdb, "w") as fh:
            app.PDBFile.writeFile(top, xyz * u.nanometer, fh, keepIds=False)
        write_json_atomic(out_dir / "composition.json", record)
    return record


def _count_metals(slab) -> dict:
    counts: dict[str, int] = {}
    for res in slab.topology.residues():
        if res.name in ("FE", "NI", "CU"):
            counts[res.name] = counts.get(res.name, 0) + 1
    return counts
