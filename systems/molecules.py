"""Single molecules as OpenMM topologies with 3D coordinates (nm), named per docs/contracts.md.

* PEO: CH3-O-(CH2CH2O)n-CH3 grown atom by atom (natural extension reference frame) with random
  trans/gauche torsions, rejecting any growth step that brings two atoms more than three bonds apart
  closer than a clash distance, so chains are coils, not rods, and never overlap themselves.
  `peo_backbone` grows into a `Surroundings` (empty space here; systems.build passes the periodic box
  being filled, which rejects atoms too close to other molecules); `peo_molecule` adds the hydrogens
  and names; `peo_chain` is one chain in empty space.
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

from spemd.resources import forcefield_xml
from spemd.errors import BuildError, ConfigError

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
MAX_TRIES_PER_ATOM = 32
TRIALS_PER_BATCH = 16
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


def _cross(a, b):
    """Cross product over the last axis (np.cross is slow for small arrays)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def _unit(v):
    return v / np.sqrt((v * v).sum(axis=-1, keepdims=True))


def _place(a, b, c, bond, angle_deg, torsion_deg):
    """Position of d bonded to c with |cd| = bond, angle b-c-d and torsion a-b-c-d (NeRF).

    a, b, c broadcast against each other ((..., 3)) and torsion_deg against their leading shape.
    """
    angle = np.radians(angle_deg)
    torsion = np.radians(np.asarray(torsion_deg, dtype=float))[..., None]
    bc = _unit(c - b)
    n = _unit(_cross(b - a, bc))
    m = _cross(n, bc)
    return c - bond * np.cos(angle) * bc + bond * np.sin(angle) * (np.cos(torsion) * m + np.sin(torsion) * n)


def _pick_torsions(rng, p_gauche, k):
    """k torsions (degrees): gauche+/- with probability p_gauche (split evenly), else trans, plus jitter."""
    gauche = rng.random(k) < p_gauche
    sign = np.where(rng.random(k) < 0.5, 1.0, -1.0)
    centre = np.where(gauche, 65.0 * sign, 180.0)
    return centre + rng.normal(0.0, TORSION_JITTER_DEG, k)


def _methyl_h(c, o, o_prev):
    """Three staggered methyl H on carbon c bonded to o (o_prev: o's other neighbour): (..., 3, 3).

    _place with torsions 180, 60, -60 degrees, written out to share the frame."""
    angle = np.radians(ANG_HCO)
    bc = _unit(c - o)
    n = _unit(_cross(o - o_prev, bc))
    m = _cross(n, bc)
    base = c - R_CH * np.cos(angle) * bc
    r = R_CH * np.sin(angle)
    t = np.radians([180.0, 60.0, -60.0])[:, None]
    return base[..., None, :] + r * (np.cos(t) * m[..., None, :] + np.sin(t) * n[..., None, :])


def _methylene_h(c, a, b):
    """Two H on sp3 carbon c bonded to a and b, H-C-H = ANG_HCH, in the plane bisecting a-c-b: (..., 2, 3)."""
    u1 = _unit(_unit(c - a) + _unit(c - b))
    n = _unit(_cross(a - c, b - c))
    half = np.radians(ANG_HCH / 2.0)
    along = c + R_CH * np.cos(half) * u1
    return along[..., None, :] + (R_CH * np.sin(half) * np.array([1.0, -1.0]))[:, None] * n[..., None, :]


def _clear_of(points, others, min_nm, box) -> np.ndarray:
    """(K,) True where none of points (K, m, 3) is closer than min_nm to any of others (M, 3)."""
    if len(others) == 0:
        return np.ones(points.shape[0], dtype=bool)
    d = points[:, :, None, :] - others[None, None, :, :]
    if box is not None:
        d -= np.round(d / box) * box
    return np.all(np.einsum("kmoi,kmoi->kmo", d, d) >= np.square(min_nm), axis=(1, 2))


class Surroundings:
    """What a chain grows into; `peo_backbone` asks it where to start and whether atoms fit.

    The default is empty, non-periodic space with the chain's head carbon at the origin.
    """

    box_nm = None  # (3,) for periodic minimum-image distances within the chain, or None

    def starts(self, rng, k: int) -> np.ndarray:
        return np.zeros((k, 3))

    def clear(self, xyz: np.ndarray, centre: np.ndarray, reach_nm: float) -> np.ndarray:
        """(K,) True where candidate atoms xyz (K, m, 3), all within reach_nm of centre ((3,) or (K, 3)), fit."""
        return np.ones(xyz.shape[0], dtype=bool)


# Farthest a growth step's new atoms lie from the atom they grow from: a tail methyl H, O-C then C-H.
STEP_REACH_NM = R_CO + R_CH + 1e-3
START_REACH_NM = 2.0 * R_CO + R_CH


def peo_backbone(n_eo: int, rng, surroundings: Surroundings | None = None) -> np.ndarray | None:
    """Backbone C(H3)-O-[C-C-O]n-C(H3) positions (nm), or None if growth got stuck.

    The chain starts at a point from `surroundings.starts` in a random orientation and grows atom by
    atom. Each step draws TRIALS_PER_BATCH torsions at once and takes the first that is clash-free, which
    is the same as trying them one after the other. A step also places the hydrogens of the carbon it
    completes (and at the end the tail methyl), and checks all new atoms against the chain itself
    (atoms more than three bonds apart: CLASH_HEAVY_NM between heavy atoms, CLASH_ANY_NM otherwise,
    minimum image if `surroundings.box_nm`) and against `surroundings.clear` (other molecules, walls).
    So g+g- sequences with H...H contacts across the ether oxygen are rejected as they arise. A step
    that finds no clash-free torsion in MAX_TRIES_PER_ATOM steps back BACKTRACK atoms and regrows; after
    MAX_BACKTRACKS the chain is given up (None).
    """
    env = surroundings or Surroundings()
    box = None if env.box_nm is None else np.asarray(env.box_nm, dtype=float)
    kinds = ["C", "O"] + ["C", "C", "O"] * n_eo + ["C"]
    n = len(kinds)
    k_try = TRIALS_PER_BATCH
    pos = np.zeros((n, 3))
    h_pos = np.zeros((2 * n + 6, 3))  # hydrogens placed so far, in the order of the atom they sit on
    h_on = np.zeros(2 * n + 6, dtype=int)  # backbone index each hydrogen sits on
    for _ in range(MAX_TRIES_PER_ATOM // k_try):
        c0 = env.starts(rng, k_try)
        u1 = rng.normal(size=(k_try, 3))
        o1 = c0 + R_CO * u1 / np.linalg.norm(u1, axis=1, keepdims=True)
        c2 = _place(c0 + rng.normal(size=(k_try, 3)), c0, o1, R_CO, ANG_COC, rng.uniform(-180.0, 180.0, k_try))
        head = np.concatenate([c0[:, None], o1[:, None], c2[:, None], _methyl_h(c0, o1, c2)], axis=1)
        ok = env.clear(head, c0, START_REACH_NM)
        if ok.any():
            k = int(np.argmax(ok))
            pos[:3] = head[k, :3]
            h_pos[:3], h_on[:3] = head[k, 3:], 0
            break
    else:
        return None
    n_h = 3
    i = 3
    backtracks = 0
    while i < n:
        prev = kinds[i - 1]
        bond = R_CC if prev == "C" and kinds[i] == "C" else R_CO
        angle = ANG_COC if prev == "O" else ANG_CCO
        # the torsion ending at atom i rotates about bond (i-2, i-1): O-C-C-O when that bond is C-C
        p_g = P_GAUCHE_OCCO if kinds[i - 2] == "C" and prev == "C" else P_GAUCHE_COCC
        # atoms more than three bonds from a new backbone atom i / new H on i-1: heavy <= i-4, H on <= i-3;
        # only those near the growing end can clash: kept as vectors from it (minimum image)
        tip = pos[i - 1]
        n_far = int(np.searchsorted(h_on[:n_h], i - 3, side="right"))
        old = np.concatenate([pos[: max(0, i - 3)], h_pos[:n_far]]) - tip
        if box is not None:
            old -= np.round(old / box) * box
        close = np.einsum("oi,oi->o", old, old) < (STEP_REACH_NM + CLASH_HEAVY_NM) ** 2
        old_heavy = (np.arange(len(old)) < max(0, i - 3))[close]
        old = old[close]
        new_heavy = np.array([True, False, False] if prev == "C" else [True])
        min_d2 = np.where(new_heavy[:, None] & old_heavy[None, :], CLASH_HEAVY_NM, CLASH_ANY_NM) ** 2
        for _ in range(MAX_TRIES_PER_ATOM // k_try):
            trial = _place(pos[i - 3], pos[i - 2], tip, bond, angle, _pick_torsions(rng, p_g, k_try))
            new = trial[:, None]
            if prev == "C":  # atom i-1 is a CH2 now bonded to both neighbours
                new_h = _methylene_h(tip, pos[i - 2], trial)
                new = np.concatenate([new, new_h], axis=1)
            d = (new - tip)[:, :, None, :] - old[None, None, :, :]
            ok = np.all(np.einsum("kmoi,kmoi->kmo", d, d) >= min_d2, axis=(1, 2))
            if i == n - 1 and ok.any():  # tail methyl H: more than three bonds from heavy <= i-3, H on <= i-2
                tail_h = _methyl_h(trial, tip, pos[i - 2])
                h_tail_far = h_pos[: int(np.searchsorted(h_on[:n_h], i - 2, side="right"))]
                ok &= _clear_of(tail_h, pos[: i - 2], CLASH_ANY_NM, box) & _clear_of(tail_h, h_tail_far, CLASH_ANY_NM, box)
                new = np.concatenate([new, tail_h], axis=1)
            if ok.any():
                ok[ok] = env.clear(new[ok], tip, STEP_REACH_NM)
            if ok.any():
                k = int(np.argmax(ok))
                pos[i] = trial[k]
                if prev == "C":
                    h_pos[n_h : n_h + 2], h_on[n_h : n_h + 2] = new_h[k], i - 1
                    n_h += 2
                i += 1
                break
        else:
            backtracks += 1
            if backtracks > MAX_BACKTRACKS:
                return None
            i = max(3, i - BACKTRACK)
            # hydrogens on atom j were placed with atom j + 1; keep those on atoms < i - 1
            n_h = int(np.searchsorted(h_on[:n_h], i - 1, side="left"))
    return pos


def peo_chain(n_eo: int, rng: np.random.Generator) -> Molecule:
    """A methyl-terminated PEO chain CH3-O-(CH2CH2O)n-CH3 with a random self-avoiding coil, grown in
    empty space and returned with its lower corner at 0 (systems.build grows chains in the box instead).
    """
    if int(n_eo) != n_eo or n_eo < 2:
        raise ConfigError(f"eo_per_chain: {n_eo!r} is out of range; must be an integer >= 2")
    n_eo = int(n_eo)
    for _ in range(MAX_CHAIN_TRIES):
        bb = peo_backbone(n_eo, rng)
        if bb is not None:
            mol = peo_molecule(n_eo, bb)
            mol.positions_nm = mol.positions_nm - mol.positions_nm.min(axis=0)
            return mol
    raise BuildError(f"eo_per_chain: could not grow a non-overlapping chain of {n_eo} EO units")


def peo_molecule(n_eo: int, bb: np.ndarray) -> Molecule:
    """The whole chain (topology, names per docs/contracts.md, hydrogens placed) on backbone `bb`."""
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
    ff = app.ForceField(str(forcefield_xml("tfsi.xml")))
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
