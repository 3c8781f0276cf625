"""Single molecules as OpenMM topologies with 3D coordinates (nm), named per docs/contracts.md.

* PEO: CH3-O-(CH2CH2O)n-CH3 grown atom by atom (natural extension reference frame) with random
  trans/gauche torsions, rejecting any growth step that brings two atoms more than three bonds apart
  closer than a clash distance, so chains are coils, not rods, and never overlap themselves.
* TFSI-: built from the CL&P z-matrix (paduagroup/clandp examples/ntf2.zmat, trans conformer) and
  relaxed with our own TFSI force field (forcefields/tfsi.xml), so bond lengths and angles sit at the
  force field's minimum rather than at the z-matrix's rounder values.
* Na+: one atom.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from forcefields.library import xml_path
from pipeline.errors import BuildError, ConfigError

# Equilibrium geometry of the OPLS-AA ether model (forcefields/peo.xml), nm and degrees.
R_CO = 0.141
R_CC = 0.1529
R_CH = 0.109
ANG_CCO = 109.5
ANG_COC = 109.5
ANG_HCO = 109.5
ANG_HCH = 107.8

# Torsion statistics of amorphous PEO (O-C-C-O mostly gauche, C-O-C-C mostly trans): the ttg/tgt
# preferences reported for PEO melts; exact populations only set the start and relax in MD.
P_GAUCHE_OCCO = 0.7
P_GAUCHE_COCC = 0.2
TORSION_JITTER_DEG = 12.0
# Atoms more than three bonds apart must not come closer than this while growing (heavy atoms) and
# in the finished chain (any atoms).
CLASH_HEAVY_NM = 0.32
CLASH_ANY_NM = 0.20
MAX_TRIES_PER_ATOM = 30
BACKTRACK = 3
MAX_BACKTRACKS = 500
MAX_CHAIN_TRIES = 200


@dataclass
class Molecule:
    """One molecule: topology (one chain) and positions (N, 3) in nm."""

    name: str
    topology: app.Topology
    positions_nm: np.ndarray

    @property
    def mass_amu(self) -> float:
        return float(sum(a.element.mass.value_in_unit(u.dalton) for a in self.topology.atoms()))


def _place(a, b, c, bond, angle_deg, torsion_deg):
    """Position of d bonded to c with |cd| = bond, angle b-c-d and torsion a-b-c-d (NeRF)."""
    angle = np.radians(angle_deg)
    torsion = np.radians(torsion_deg)
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d2 = np.array([-bond * np.cos(angle), bond * np.sin(angle) * np.cos(torsion), bond * np.sin(angle) * np.sin(torsion)])
    return c + d2[0] * bc + d2[1] * m + d2[2] * n


def _pick_torsion(rng, p_gauche):
    if rng.random() < p_gauche:
        centre = 65.0 if rng.random() < 0.5 else -65.0
    else:
        centre = 180.0
    return centre + rng.normal(0.0, TORSION_JITTER_DEG)


def _peo_backbone(n_eo: int, rng, extent=None) -> np.ndarray | None:
    """Backbone C(H3)-O-[C-C-O]n-C(H3) positions, or None if growth got stuck.

    Each step also places the hydrogens of the carbon it completes and checks them, so that
    g+g- sequences with H...H contacts across the ether oxygen are rejected as they arise. A step that
    finds no clash-free torsion steps back BACKTRACK atoms and regrows from there. With `extent`
    (3 lengths, nm) the backbone's bounding box stays within extent - 2 x R_CH, so the chain with
    its hydrogens fits a box of that size unrotated.
    """
    limit = None if extent is None else np.asarray(extent, dtype=float) - 2.0 * R_CH
    kinds = ["C", "O"] + ["C", "C", "O"] * n_eo + ["C"]
    n = len(kinds)
    pos = np.zeros((n, 3))
    pos[1] = [R_CO, 0.0, 0.0]
    pos[2] = _place(np.array([0.0, 1.0, 0.0]), pos[0], pos[1], R_CO, ANG_COC, 180.0)
    h_of = {0: _methyl_h(pos[0], pos[1], pos[2])}  # backbone index -> its hydrogens
    i = 3
    backtracks = 0
    while i < n:
        prev, cur = kinds[i - 1], kinds[i]
        bond = R_CC if prev == "C" and cur == "C" else R_CO
        angle = ANG_COC if prev == "O" else ANG_CCO
        # the torsion ending at atom i rotates about bond (i-2, i-1): O-C-C-O when that bond is C-C
        p_g = P_GAUCHE_OCCO if kinds[i - 2] == "C" and kinds[i - 1] == "C" else P_GAUCHE_COCC
        # hydrogens more than three bonds from atom i sit on backbone atoms <= i-3
        old_h = np.array([h for k, hs in h_of.items() if k <= i - 3 for h in hs])
        for _ in range(MAX_TRIES_PER_ATOM):
            trial = _place(pos[i - 3], pos[i - 2], pos[i - 1], bond, angle, _pick_torsion(rng, p_g))
            if i >= 4 and np.min(np.linalg.norm(pos[: i - 3] - trial, axis=1)) < CLASH_HEAVY_NM:
                continue
            if np.min(np.linalg.norm(old_h - trial, axis=1)) < CLASH_ANY_NM:
                continue
            if limit is not None and np.any(
                np.maximum(pos[:i].max(axis=0), trial) - np.minimum(pos[:i].min(axis=0), trial) > limit
            ):
                continue
            new_h = _methylene_h(pos[i - 1], pos[i - 2], trial) if prev == "C" else []
            if new_h and not _h_clear(np.array(new_h), pos[: i - 3], old_h):
                continue
            if i == n - 1:
                tail_h = _methyl_h(trial, pos[i - 1], pos[i - 2])
                if not _h_clear(np.array(tail_h), pos[: i - 2], np.array([h for k, hs in h_of.items() if k <= i - 2 for h in hs])):
                    continue
            pos[i] = trial
            if new_h:
                h_of[i - 1] = new_h
            i += 1
            break
        else:
            backtracks += 1
            if backtracks > MAX_BACKTRACKS:
                return None
            i = max(3, i - BACKTRACK)
            h_of = {k: hs for k, hs in h_of.items() if k < i - 1}
    return pos


def _h_clear(new_h, heavy, old_h) -> bool:
    """New hydrogens keep CLASH_ANY_NM from the given heavy atoms and hydrogens."""
    for others in (heavy, old_h):
        if len(others) and np.min(np.linalg.norm(new_h[:, None, :] - others[None, :, :], axis=-1)) < CLASH_ANY_NM:
            return False
    return True


def _methyl_h(c, o, o_prev):
    """Three staggered methyl H on carbon c bonded to o (o_prev: o's other neighbour)."""
    return [_place(o_prev, o, c, R_CH, ANG_HCO, t) for t in (180.0, 60.0, -60.0)]


def _methylene_h(c, a, b):
    """Two H on sp3 carbon c bonded to a and b, H-C-H = ANG_HCH, in the plane bisecting a-c-b."""
    u1 = (c - a) / np.linalg.norm(c - a) + (c - b) / np.linalg.norm(c - b)
    u1 /= np.linalg.norm(u1)
    n = np.cross(a - c, b - c)
    n /= np.linalg.norm(n)
    half = np.radians(ANG_HCH / 2.0)
    return [c + R_CH * (np.cos(half) * u1 + s * np.sin(half) * n) for s in (1.0, -1.0)]


def _graph_distance_le3(n_atoms, bonds):
    """Boolean matrix: True where two atoms are at most three bonds apart (or identical)."""
    adj = np.eye(n_atoms, dtype=bool)
    for i, j in bonds:
        adj[i, j] = adj[j, i] = True
    reach = adj.copy()
    for _ in range(2):
        reach = (reach.astype(np.int32) @ adj.astype(np.int32)) > 0
    return reach


def peo_chain(n_eo: int, rng: np.random.Generator, max_extent_nm=None) -> Molecule:
    """A methyl-terminated PEO chain CH3-O-(CH2CH2O)n-CH3 with a random self-avoiding coil.

    `max_extent_nm` (x, y, z lengths) bounds the chain's bounding box in its own frame, so that it can
    be packed unrotated into a box of that size; the chain is returned with its lower corner at 0.
    """
    if int(n_eo) != n_eo or n_eo < 2:
        raise ConfigError(f"eo_per_chain: {n_eo!r} is out of range; must be an integer >= 2")
    n_eo = int(n_eo)
    for _ in range(MAX_CHAIN_TRIES):
        bb = _peo_backbone(n_eo, rng, max_extent_nm)
        if bb is None:
            continue
        mol = _assemble_peo(n_eo, bb)
        xyz = mol.positions_nm
        near = _graph_distance_le3(len(xyz), [(b[0].index, b[1].index) for b in mol.topology.bonds()])
        d = np.linalg.norm(xyz[:, None, :] - xyz[None, :, :], axis=-1)
        if np.min(d[~near]) >= CLASH_ANY_NM:
            mol.positions_nm = xyz - xyz.min(axis=0)
            return mol
    where = "" if max_extent_nm is None else f" within {np.round(max_extent_nm, 3).tolist()} nm"
    raise BuildError(f"eo_per_chain: could not grow a non-overlapping chain of {n_eo} EO units{where}")


def _assemble_peo(n_eo: int, bb: np.ndarray) -> Molecule:
    top = app.Topology()
    chain = top.addChain()
    E = app.element
    xyz = []

    def add(res, name, element, p):
        xyz.append(p)
        return top.addAtom(name, element, res)

    # backbone indices: 0 = C head, 1 = O head, then 2+3k, 3+3k, 4+3k = C1, C2, O1 of unit k, last = C tail
    res = top.addResidue("PEH", chain)
    c_head = add(res, "C1", E.carbon, bb[0])
    o_head = add(res, "O1", E.oxygen, bb[1])
    top.addBond(c_head, o_head)
    for k, h in enumerate(_methyl_h(bb[0], bb[1], bb[2]), start=1):
        top.addBond(c_head, add(res, f"H1{k}", E.hydrogen, h))
    prev_o = o_head
    for k in range(n_eo):
        i = 2 + 3 * k
        res = top.addResidue("PEM", chain)
        c1 = add(res, "C1", E.carbon, bb[i])
        c2 = add(res, "C2", E.carbon, bb[i + 1])
        o1 = add(res, "O1", E.oxygen, bb[i + 2])
        top.addBond(prev_o, c1)
        top.addBond(c1, c2)
        top.addBond(c2, o1)
        for name, h in zip(("H11", "H12"), _methylene_h(bb[i], bb[i - 1], bb[i + 1])):
            top.addBond(c1, add(res, name, E.hydrogen, h))
        for name, h in zip(("H21", "H22"), _methylene_h(bb[i + 1], bb[i], bb[i + 2])):
            top.addBond(c2, add(res, name, E.hydrogen, h))
        prev_o = o1
    res = top.addResidue("PET", chain)
    c_tail = add(res, "C1", E.carbon, bb[-1])
    top.addBond(prev_o, c_tail)
    for k, h in enumerate(_methyl_h(bb[-1], bb[-2], bb[-3]), start=1):
        top.addBond(c_tail, add(res, f"H1{k}", E.hydrogen, h))
    return Molecule(f"PEO{n_eo}", top, np.array(xyz))


# CL&P z-matrix of [NTf2]- (paduagroup/clandp examples/ntf2.zmat): (name, ref_bond, r/A, ref_angle,
# angle/deg, ref_torsion, torsion/deg), z-matrix atoms 1..15 renamed to the contract's TFS names.
_TFSI_ZMAT = [
    ("C1", None, None, None, None, None, None),
    ("F1", "C1", 1.332, None, None, None, None),
    ("F2", "C1", 1.332, "F1", 107.1, None, None),
    ("F3", "C1", 1.332, "F1", 107.1, "F2", 120.0),
    ("S1", "C1", 1.818, "F1", 111.8, "F2", -120.0),
    ("N1", "S1", 1.700, "C1", 102.6, "F2", 60.0),
    ("O1", "S1", 1.443, "C1", 102.6, "N1", 120.0),
    ("O2", "S1", 1.443, "C1", 102.6, "N1", -120.0),
    ("S2", "N1", 1.700, "S1", 120.0, "C1", 90.0),
    ("O3", "S2", 1.443, "N1", 102.6, "S1", -30.0),
    ("O4", "S2", 1.443, "N1", 102.6, "S1", -150.0),
    ("C2", "S2", 1.818, "N1", 102.6, "S1", 90.0),
    ("F4", "C2", 1.332, "S2", 107.1, "N1", 60.0),
    ("F5", "C2", 1.332, "S2", 107.1, "N1", -60.0),
    ("F6", "C2", 1.332, "S2", 107.1, "N1", 180.0),
]
_TFSI_ORDER = ["N1", "S1", "S2", "O1", "O2", "O3", "O4", "C1", "C2", "F1", "F2", "F3", "F4", "F5", "F6"]
_TFSI_BONDS = [("N1", "S1"), ("N1", "S2"), ("S1", "O1"), ("S1", "O2"), ("S1", "C1"), ("S2", "O3"),
               ("S2", "O4"), ("S2", "C2"), ("C1", "F1"), ("C1", "F2"), ("C1", "F3"), ("C2", "F4"),
               ("C2", "F5"), ("C2", "F6")]


def _zmatrix_to_xyz(zmat) -> dict[str, np.ndarray]:
    """Cartesian coordinates (Angstrom) from a z-matrix in the layout of _TFSI_ZMAT."""
    xyz: dict[str, np.ndarray] = {}
    for k, (name, rb, r, ra, ang, rt, tor) in enumerate(zmat):
        if k == 0:
            xyz[name] = np.zeros(3)
        elif k == 1:
            xyz[name] = xyz[rb] + np.array([r, 0.0, 0.0])
        elif k == 2:
            a = np.radians(ang)
            d = xyz[ra] - xyz[rb]
            d /= np.linalg.norm(d)
            perp = np.array([-d[1], d[0], 0.0]) if abs(d[2]) < 0.9 else np.array([0.0, -d[2], d[1]])
            perp /= np.linalg.norm(perp)
            xyz[name] = xyz[rb] + r * (np.cos(a) * d + np.sin(a) * perp)
        else:
            xyz[name] = _place(xyz[rt], xyz[ra], xyz[rb], r, ang, tor)
    return xyz


def _tfsi_topology() -> app.Topology:
    top = app.Topology()
    res = top.addResidue("TFS", top.addChain())
    atoms = {name: top.addAtom(name, app.element.get_by_symbol(name[0]), res) for name in _TFSI_ORDER}
    for a, b in _TFSI_BONDS:
        top.addBond(atoms[a], atoms[b])
    return top


@functools.lru_cache(maxsize=1)
def _tfsi_relaxed_nm() -> np.ndarray:
    xyz = _zmatrix_to_xyz(_TFSI_ZMAT)
    start = np.array([xyz[n] for n in _TFSI_ORDER]) * 0.1
    top = _tfsi_topology()
    ff = app.ForceField(str(xml_path("tfsi.xml")))
    system = ff.createSystem(top, nonbondedMethod=app.NoCutoff, constraints=None)
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(start)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    pos = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    return pos - pos.mean(axis=0)


def tfsi() -> Molecule:
    """TFSI- at the minimum of its CL&P force field, centred at the origin."""
    return Molecule("TFSI", _tfsi_topology(), _tfsi_relaxed_nm().copy())


def sodium() -> Molecule:
    top = app.Topology()
    top.addAtom("NA", app.element.sodium, top.addResidue("NA", top.addChain()))
    return Molecule("Na", top, np.zeros((1, 3)))
