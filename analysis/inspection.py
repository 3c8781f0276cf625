"""``spemd inspect TOPOLOGY [TRAJECTORY]``: what a topology holds, and selections for ``spemd analyse``.

Prints residue names with their counts, the atom names of each residue name (from its first residue),
the box (nm), the frame count and time step (ps), and suggested MDAnalysis selections, so that
someone else's files (``resname NA+``, ``SOD``, ``LI``...) need no Python session to find them.

Elements come from the topology's element column, else from MDAnalysis' guessed types, else from
the atom name (leading letters). Suggestions, from the first frame's coordinates:

- cations: one-atom residues of Li, Na, K, Rb, Cs, Mg, Ca or Zn;
- anions: one-atom residues of F, Cl, Br or I;
- anion oxygens: O atoms bonded to an S, P or Cl atom (sulfonyl, phosphate, perchlorate) in
  residues of at most 30 atoms (a salt's anion, not a lipid or protein);
- ether oxygens: O atoms bonded to two C atoms (C-O-C; bonds across residues count);
- water oxygens: the O of three- to five-atom residues with one O and two H.

Bonds are the topology's (PDB CONECT, PSF, TPR) where it has any; otherwise two atoms count as bonded
at 0.11-0.17 nm in the first frame: the band holds every C-O (0.143 nm), S-O (0.144 nm) and P-O
(0.15-0.16 nm) bond and lies below the shortest non-bonded O...C contact of a condensed phase (~0.26 nm).
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict

import numpy as np

from spemd.units import angstrom_to_nm, nm_to_angstrom

CATION_ELEMENTS = ("Li", "Na", "K", "Rb", "Cs", "Mg", "Ca", "Zn")
ANION_ELEMENTS = ("F", "Cl", "Br", "I")
TWO_LETTER = {"Li", "Na", "Rb", "Cs", "Mg", "Ca", "Zn", "Cl", "Br", "Fe", "Ni", "Cu"}
#: Covalent-bond band for the suggestions without bonds in the topology (module docstring).
BOND_MIN_NM, BOND_CUTOFF_NM = 0.11, 0.17
#: Largest residue counted as a salt anion.
MAX_ANION_ATOMS = 30


def _element(raw: str) -> str:
    letters = re.sub(r"[^A-Za-z]", "", raw or "")
    if not letters:
        return ""
    two = letters[:2].capitalize()
    return two if two in TWO_LETTER else letters[0].upper()


def elements(u) -> list[str]:
    """One element symbol per atom: the element column, else the guessed type, else the atom name."""
    atoms = u.atoms
    for attr in ("elements", "types"):
        if hasattr(atoms, attr):
            values = [str(v) for v in getattr(atoms, attr)]
            if all(v.strip() for v in values):
                return [_element(v) for v in values]
    return [_element(n) for n in atoms.names]


def _selection(pairs) -> str | None:
    """An MDAnalysis selection for (resname, atom name) pairs, grouped by residue name."""
    by_res: OrderedDict[str, list[str]] = OrderedDict()
    for res, name in sorted(set(pairs)):
        by_res.setdefault(res, []).append(name)
    if not by_res:
        return None
    groups: OrderedDict[tuple, list[str]] = OrderedDict()
    for res, names in by_res.items():
        groups.setdefault(tuple(names), []).append(res)
    clauses = [f"resname {' '.join(res)} and name {' '.join(names)}" for names, res in groups.items()]
    return clauses[0] if len(clauses) == 1 else " or ".join(f"({c})" for c in clauses)


def _bonded_counts(u, centres, partners) -> np.ndarray:
    """For each atom index in `centres`, its number of bonded `partners`: from the topology's bonds when
    it has any, else the partners at BOND_MIN_NM-BOND_CUTOFF_NM (periodic) in the first frame."""
    counts = np.zeros(len(centres), dtype=int)
    if len(centres) == 0 or len(partners) == 0:
        return counts
    if hasattr(u, "bonds") and len(u.bonds):
        is_partner = np.zeros(len(u.atoms), dtype=bool)
        is_partner[partners] = True
        per_atom = np.zeros(len(u.atoms), dtype=int)
        bonds = np.asarray(u.bonds.indices)
        for a, b in ((bonds[:, 0], bonds[:, 1]), (bonds[:, 1], bonds[:, 0])):
            np.add.at(per_atom, a[is_partner[b]], 1)
        return per_atom[centres]
    from MDAnalysis.lib.distances import capped_distance

    pairs = capped_distance(u.atoms.positions[centres], u.atoms.positions[partners],
                            min_cutoff=nm_to_angstrom(BOND_MIN_NM), max_cutoff=nm_to_angstrom(BOND_CUTOFF_NM),
                            box=u.dimensions, return_distances=False)
    np.add.at(counts, pairs[:, 0], 1)
    return counts


def suggest_selections(u) -> dict[str, str | None]:
    """Selections for cations, anions, anion oxygens, ether oxygens and water oxygens (None: none found)."""
    el = np.array(elements(u))
    resnames = u.atoms.resnames
    res_sizes = np.array([len(r.atoms) for r in u.residues])[u.atoms.resindices]
    names = u.atoms.names
    single = res_sizes == 1
    cat = [(resnames[i], names[i]) for i in np.flatnonzero(single & np.isin(el, CATION_ELEMENTS))]
    an = [(resnames[i], names[i]) for i in np.flatnonzero(single & np.isin(el, ANION_ELEMENTS))]
    oxygens = np.flatnonzero(el == "O")
    # water: residues of 3-5 atoms with one O and two H
    water = []
    for r in u.residues:
        if 3 <= len(r.atoms) <= 5:
            re_ = el[r.atoms.indices]
            if (re_ == "O").sum() == 1 and (re_ == "H").sum() == 2:
                water.append(r.resindex)
    is_water = np.isin(u.atoms.resindices, water)
    small = res_sizes <= MAX_ANION_ATOMS
    cand = oxygens[~is_water[oxygens]]
    n_acid = _bonded_counts(u, cand, np.flatnonzero(np.isin(el, ("S", "P", "Cl"))))
    n_carbon = _bonded_counts(u, cand, np.flatnonzero(el == "C"))
    anion_o = [(resnames[i], names[i]) for i in cand[(n_acid > 0) & small[cand]]]
    ether_o = [(resnames[i], names[i]) for i in cand[(n_carbon >= 2) & (n_acid == 0)]]
    water_o = [(resnames[i], names[i]) for i in oxygens[is_water[oxygens]]]
    return {"cations": _selection(cat), "anions": _selection(an), "anion oxygens": _selection(anion_o),
            "ether oxygens": _selection(ether_o), "water oxygens": _selection(water_o)}


def inspect_text(u, has_trajectory: bool) -> str:
    """The report of `spemd inspect` for a loaded Universe."""
    lines = [f"{len(u.atoms)} atoms, {len(u.residues)} residues"]
    counts = Counter(u.residues.resnames)
    lines.append("residues (count: atom names of the first one):")
    for res, n in counts.most_common():
        first = u.residues[u.residues.resnames == res][0].atoms
        atom_names = " ".join(first.names)
        if len(first) > 24:
            atom_names = " ".join(first.names[:24]) + f" ... ({len(first)} atoms)"
        lines.append(f"  {res:<6} {n:>7}: {atom_names}")
    dims = u.dimensions
    if dims is None or not np.all(np.asarray(dims[:3]) > 0):
        lines.append("box: none in the topology")
    else:
        a, b, c = angstrom_to_nm(np.asarray(dims[:3], dtype=float))
        lines.append(f"box: {a:.3f} x {b:.3f} x {c:.3f} nm, angles {dims[3]:.1f} {dims[4]:.1f} {dims[5]:.1f} deg")
    if has_trajectory:
        n, dt = u.trajectory.n_frames, u.trajectory.dt
        lines.append(f"trajectory: {n} frames, time step {dt:g} ps between frames, {dt * max(n - 1, 0):g} ps in all")
    else:
        lines.append("trajectory: none given (topology frame only)")
    lines.append("suggested selections (check them; --select/--select2 of `spemd analyse`):")
    for label, sel in suggest_selections(u).items():
        lines.append(f"  {label + ':':<15} " + (f"'{sel}'" if sel else "none found"))
    return "\n".join(lines)


def add_inspect_parser(subparsers):
    """Add ``inspect`` to an argparse subparsers object; returns the parser."""
    p = subparsers.add_parser("inspect", help="list a topology's residues, atom names, box, frames and suggested selections",
                              description=__doc__.splitlines()[0])
    p.add_argument("topology", help="topology file (PDB, GRO, PSF, TPR, ...)")
    p.add_argument("trajectory", nargs="?", default=None,
                   help="trajectory file (DCD, XTC, TRR, ...; default: none, the topology's own frame)")
    p.set_defaults(func=run_inspect)
    return p


def run_inspect(args) -> int:
    """Print the report of ``spemd inspect``; returns 0."""
    import logging

    from spemd.analysis._common import load_universe

    if not getattr(args, "verbose", False):
        logging.getLogger("MDAnalysis").setLevel(logging.WARNING)
    u = load_universe(args.topology, args.trajectory)
    print(inspect_text(u, args.trajectory is not None))
    return 0
