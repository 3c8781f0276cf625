"""M3(BTC)2 (HKUST-1 type) metal-organic-framework slabs built from the crystal structure.

Crystal structure
-----------------
Space group Fm-3m (No. 225, origin at m-3m), cubic a = 26.343 Angstrom, asymmetric unit of
Chui et al., Science 283 (1999) 1148 (Cu3(BTC)2, H atoms at their X-ray riding positions, C-H 0.93 A):

==========  =====================  ===========================================
site        fractional x, y, z     role
==========  =====================  ===========================================
M           0.2853 0.2853 0.0      paddlewheel metal (48 per cell)
O           0.3166 0.2431 0.9478   carboxylate O (192)
Ccarb       0.2968 0.2032 0.9313   carboxylate C (96)
Cring       0.322  0.178  0.887    ring C bonded to the carboxylate C (C-COO, 96)
CH          0.3655 0.1994 0.8655   ring C bonded to H (C-H, 96)
H           0.3802 0.228  0.8802   H (96)
==========  =====================  ===========================================

(The C-COO / C-H assignment follows from the distances: Cring-Ccarb 1.50 A, CH-H 0.93 A.)
The full cell (624 atoms: 48 M, 192 O, 288 C, 96 H) is generated with the 48 point operations of
m-3m (all signed permutations of x, y, z) times the 4 F-centring translations, merging images closer
than 0.1 A (periodic distance). Geometry: M-M 2.63 A, M-O 1.95 A; Cu3(BTC)2 density 0.88 g/cm3.

Building units and naming (docs/contracts.md)
---------------------------------------------
* Linker residue ``BTC`` (C9H3O6, 18 atoms). Ring: C1(-COO) C2(-H) C3(-COO) C4(-H) C5(-COO) C6(-H)
  in ring order; carboxylate C7 on C1 (O1, O2), C8 on C3 (O3, O4), C9 on C5 (O5, O6); H1 on C2,
  H2 on C4, H3 on C6. Force-field types: C1/C3/C5 ``mof_Cring``, C2/C4/C6 ``mof_CH``, C7-C9
  ``mof_Ccarb``, O1-O6 ``mof_O``, H1-H3 ``mof_H``.
* Metal residues ``FE``, ``NI``, ``CU``: one atom each, atom name = residue name.
  Types ``mof_Fe``, ``mof_Ni``, ``mof_Cu``; the Fe of a FeNi paddlewheel is ``mof_FeNiFe`` (its own
  site term; still residue ``FE``, chosen by its Ni partner, forcefields/library.py).
* Topology bonds: all 18 linker-internal bonds (ring, C-COO, C-O, C-H), every M-O(carboxylate)
  bond and the paddlewheel M-M bond, including bonds that cross the x/y periodic boundary, so that the
  slab is one connected molecule.

Slab construction (non-polar cut)
---------------------------------
The slab is periodic in x and y (box ``cells[0]*a`` x ``cells[1]*a``) with normal z and is kept free
of a z dipole: in a box periodic in z (polymer between the two faces) a polar slab would put a uniform
field across the electrolyte. Building units (linker: centroid of its 18 atoms; paddlewheel: midpoint
of the M-M pair) are kept whole (atoms unwrapped around the centre) and selected by centre, with x in
[0, nx a) and y in [0, ny a), symmetrically about a z symmetry plane of Fm-3m (``SLAB_PLANES``: the
mirror m_z at z = 0, equivalent to z = 1/2, and the glide plane at z = 1/4): a selection that is
mapped onto itself by that operation has sum_i q_i z_i = 0 about the plane, hence no z dipole once it
is also neutral.

Unit-centre layers per cell (count per conventional cell area): PW(4) at z = 0, BTC(8) 0.1576,
PW(8) 0.25, BTC(8) 0.3424, PW(4) 0.5, ... (PW = paddlewheel, formally +4; BTC -3). :func:`slab_cut`
scans, for both planes and every layer distance d, the cut of all units with |dz| <= d, rejects cuts
that end in linker layers (their linkers keep carboxylates bound to no metal, which would need COOH
caps; see docs/mof_surface.md for why they were dropped), caps the rest (below) and keeps those that
are neutral once capped, choosing the one whose unit atoms' z extent is nearest nz a (ties: the
mirror plane). The result, for every nz: the mirror plane z = 0, d = nz/2, i.e. nz cells of
framework plus the second face's outermost PW(4) layer: per cell area 24 nz + 4 paddlewheels and
32 nz linkers, metals spanning exactly nz * a (the outermost metals belong to the face paddlewheels,
whose M-M axes lie in the face plane). The two faces are mirror images of each other.

Surface termination (caps)
--------------------------
Each face paddlewheel has lost the 2 linkers that lie outside the slab. Every carboxylate of such a
linker that binds a slab metal is replaced by a formate cap (residue ``FMT``: C, O1, O2, H): C and O
at the crystal positions of the lost carboxylate (bridging the same two metals), H on the lost
C-C(ring) bond at ``FORMATE_C_H_ANGSTROM``. Every metal keeps its 4 carboxylate O (checked), no
linker carboxylate is left unbound, and in formal charges 28 PW x 4 - 32 BTC x 3 - 16 FMT = 0 per
cell area; the forcefields/mof.xml charges (0.549 e per formal unit, formate H +0.003 e) give the
same balance. 8 formates per face per cell area; their H are the outermost atoms, 0.266 nm beyond
the face metals.

Finally the slab is shifted so that its atoms span z in [0, thickness_nm] (``thickness_nm`` = extent
of the atom centres, caps included; whoever places the slab in a box adds clearance). Atoms of whole
units may stick out of [0, box) in x and y by up to half a unit; wrap them if a consumer needs it.

Residues and templates: ``BTC`` (6 metal-bound O), ``FMT`` (2), metals ``FE`` / ``NI`` / ``CU``
(4 O + the M-M partner). Atom types per atom are ``MofSlab.atom_types``; charges are per type, one
table in ``forcefields/mof.xml`` (:func:`type_charges`), and ``MofSlab.charges_e`` carries them.

Open metal sites
----------------
The axial (open) site of a paddlewheel metal lies on the M-M axis, away from its partner, at
``AXIAL_SITE_NM`` (0.22 nm, about the axial Cu-O(water) distance of hydrated HKUST-1). A metal counts
in ``n_metal_sites_exposed`` when its axial site lies within ``EXPOSED_FACE_NM`` (0.3 nm) of a slab
face or beyond it: site z <= 0.3 nm or site z >= thickness_nm - 0.3 nm.

Each face carries 4 paddlewheels per cell area with in-plane M-M axes; both metals of each have their
axial site in the face-metal plane, 0.266 nm below the outermost (formate H) atoms, and the nearest
atom to each site is one of its own carboxylate O (0.309 nm): 8 open sites per face per cell area.
The outward-pointing metals of the next paddlewheel layer (axes 45 degrees to z) have their axial
sites deeper and do not count. A (nx, ny, nz) slab: 16*nx*ny exposed metals (8 per face), any nz.

FeNi
----
Every paddlewheel holds one Fe and one Ni. Paddlewheels are ordered by centre (z, y, x); the metal
at the "upper" end of the axis (larger z, ties broken by larger y, then larger x) is Fe for even and
Ni for odd positions in that order, so both kinds face both slab faces and each direction.
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from collections import Counter, deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as u

from spemd.errors import BuildError, ConfigError, one_of
from spemd.slab import AXIAL_SITE_NM, EXPOSED_FACE_NM  # the analysis finds the open sites with them too
from spemd.units import angstrom_to_nm, density_g_per_cm3

#: Cubic lattice constant of Cu3(BTC)2 (Chui et al. 1999), Angstrom.
A_CELL_ANGSTROM = 26.343

#: Asymmetric unit (site label, fractional coordinates), Chui et al. 1999.
ASYMMETRIC_UNIT: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("M", (0.2853, 0.2853, 0.0)),
    ("O", (0.3166, 0.2431, 0.9478)),
    ("Ccarb", (0.2968, 0.2032, 0.9313)),
    ("Cring", (0.322, 0.178, 0.887)),
    ("CH", (0.3655, 0.1994, 0.8655)),
    ("H", (0.3802, 0.228, 0.8802)),
)

SITE_ELEMENT = {"M": None, "O": "O", "Ccarb": "C", "Cring": "C", "CH": "C", "H": "H"}

#: Allowed values of ``mof_metal``.
METALS = ("FeNi", "Fe", "Ni", "Cu")

MERGE_TOLERANCE_ANGSTROM = 0.1

#: Bond cut-offs (Angstrom) between site labels; crystal distances are M-M 2.63, M-O 1.95, C-O 1.25,
#: Ccarb-Cring 1.50, ring C-C 1.40, C-H 0.93; the shortest non-bonded pair (O...O in a carboxylate)
#: is 2.22 A and M...Ccarb 2.84 A, well beyond these cut-offs.
BOND_CUTOFF_ANGSTROM = {
    frozenset(("M",)): 2.9,
    frozenset(("M", "O")): 2.3,
    frozenset(("O", "Ccarb")): 1.6,
    frozenset(("Ccarb", "Cring")): 1.7,
    frozenset(("Cring", "CH")): 1.6,
    frozenset(("CH", "H")): 1.3,
}

#: Fractional z at which the reference window of one cell's units (:func:`_cell_units`, centres in
#: [z, z + 1)) starts: between the unit-centre layers PW 0 and BTC 0.1576, so that no centre lies on
#: the window edge. The slab itself is cut by :func:`slab_cut`.
Z_ORIGIN_FRACTION = 0.0788

MOF_XML = Path(__file__).resolve().parents[1] / "forcefields" / "mof.xml"

_METAL_RESNAME = {"Fe": "FE", "Ni": "NI", "Cu": "CU"}


@dataclass
class MofSlab:
    """A periodic-in-x/y M3(BTC)2 slab (OpenMM units: nm, amu, e)."""

    topology: app.Topology  # BTC residues first, then the metal residues (paddlewheel partners adjacent)
    positions_nm: np.ndarray  # (N, 3), z in [0, thickness_nm]; units whole (x/y may leave [0, box))
    box_x_nm: float  # cells[0] * a
    box_y_nm: float  # cells[1] * a
    thickness_nm: float  # z extent of the atom centres (no clearance)
    mass_amu: float
    charge_e: float  # sum of the forcefields/mof.xml charges (0 within 1e-9, else BuildError)
    metal: str  # FeNi, Fe, Ni or Cu
    cells: tuple[int, int, int]
    n_metal_sites_exposed: int  # metals whose axial site is within 0.3 nm of a face (module doc)
    atom_types: list[str]  # forcefields/mof.xml type of every atom
    charges_e: np.ndarray  # (N,) the mof.xml charge of every atom
    n_formate: int  # formate caps (FMT residues), half on each face


# ----------------------------------------------------------------------------------------------
# crystal
# ----------------------------------------------------------------------------------------------


def _point_operations() -> list[np.ndarray]:
    """The 48 operations of m-3m as 3x3 matrices: all signed permutation matrices."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            for row, (col, s) in enumerate(zip(perm, signs)):
                m[row, col] = s
            mats.append(m)
    return mats


F_CENTRING = np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])


def _min_image(d: np.ndarray) -> np.ndarray:
    return d - np.round(d)


@lru_cache(maxsize=1)
def _cell() -> tuple[tuple[str, ...], np.ndarray]:
    labels: list[str] = []
    frac: list[np.ndarray] = []
    ops = _point_operations()
    for label, xyz in ASYMMETRIC_UNIT:
        site: list[np.ndarray] = []
        x = np.asarray(xyz, dtype=float)
        for op in ops:
            y = op @ x
            for t in F_CENTRING:
                z = np.mod(y + t, 1.0)
                if site:
                    d = _min_image(np.asarray(site) - z) * A_CELL_ANGSTROM
                    if (np.linalg.norm(d, axis=1) < MERGE_TOLERANCE_ANGSTROM).any():
                        continue
                site.append(z)
        labels += [label] * len(site)
        frac += site
    return tuple(labels), np.asarray(frac)


def unit_cell() -> tuple[list[str], np.ndarray]:
    """Site labels (``M``, ``O``, ``Ccarb``, ``Cring``, ``CH``, ``H``) and fractional coordinates
    (N, 3) in [0, 1) of the full conventional cell (N = 624)."""
    labels, frac = _cell()
    return list(labels), frac.copy()


@lru_cache(maxsize=1)
def _cell_bonds() -> tuple[tuple[int, int, tuple[int, int, int]], ...]:
    """Bonds (i, j, image) of the periodic cell: atom j sits at frac[j] + image, bonded to frac[i]."""
    labels, frac = _cell()
    lab = np.asarray(labels)
    bonds = []
    d_all = frac[None, :, :] - frac[:, None, :]
    img = -np.round(d_all)
    dist = np.linalg.norm((d_all + img) * A_CELL_ANGSTROM, axis=2)
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            cut = BOND_CUTOFF_ANGSTROM.get(frozenset((lab[i], lab[j])))
            if cut is not None and dist[i, j] < cut:
                bonds.append((i, j, tuple(int(v) for v in img[i, j])))
    return tuple(bonds)


@dataclass
class _Unit:
    kind: str  # "BTC" or "PW"
    atoms: list[int]  # cell indices, in naming order (BTC) or (m1, m2) (PW)
    names: list[str]
    frac: np.ndarray  # unwrapped fractional coordinates, centre in the reference window
    centre: np.ndarray


_BTC_NAME_ORDER = (
    ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"] + [f"O{k}" for k in range(1, 7)] + ["H1", "H2", "H3"]
)


@lru_cache(maxsize=1)
def _cell_units() -> tuple[_Unit, ...]:
    """The 32 linkers and 24 paddlewheels of one cell, whole, centres in [0,1)^2 x [z0, z0+1)."""
    labels, frac = _cell()
    n = len(labels)
    nbr: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(n)]
    for i, j, image in _cell_bonds():
        im = np.asarray(image, dtype=float)
        nbr[i].append((j, im))
        nbr[j].append((i, -im))

    def unwrap(start: int, allowed) -> dict[int, np.ndarray]:
        pos = {start: frac[start].copy()}
        queue = deque([start])
        while queue:
            i = queue.popleft()
            for j, im in nbr[i]:
                if j in pos or not allowed(j):
                    continue
                pos[j] = pos[i] + (frac[j] + im - frac[i])
                queue.append(j)
        return pos

    units: list[_Unit] = []
    seen: set[int] = set()
    organic = lambda k: labels[k] != "M"  # noqa: E731
    for i in range(n):
        if i in seen:
            continue
        if labels[i] == "M":
            pos = unwrap(i, lambda k: labels[k] == "M")
            if len(pos) != 2:
                raise BuildError(f"mof crystal: metal {i} has {len(pos) - 1} M-M partners, expected 1")
            order = sorted(pos)
            units.append(_Unit("PW", order, ["M", "M"], np.array([pos[k] for k in order]), np.zeros(3)))
        else:
            pos = unwrap(i, organic)
            order = _name_linker(pos.keys(), labels, nbr)
            units.append(_Unit("BTC", order, list(_BTC_NAME_ORDER), np.array([pos[k] for k in order]), np.zeros(3)))
        seen.update(pos)
    for unit in units:
        c = unit.frac.mean(axis=0)
        shift = np.floor(c - np.array([0.0, 0.0, Z_ORIGIN_FRACTION]))
        unit.frac = unit.frac - shift
        unit.centre = c - shift
    n_btc = sum(u_.kind == "BTC" for u_ in units)
    n_pw = len(units) - n_btc
    if (n_btc, n_pw) != (32, 24) or any(len(u_.atoms) != 18 for u_ in units if u_.kind == "BTC"):
        raise BuildError(f"mof crystal: found {n_btc} linkers and {n_pw} paddlewheels per cell, expected 32 and 24")
    return tuple(units)


def _name_linker(atoms, labels, nbr) -> list[int]:
    """Order the 18 cell atoms of one linker as ``_BTC_NAME_ORDER``."""
    atoms = set(atoms)
    bonded = {i: [j for j, _ in nbr[i] if j in atoms] for i in atoms}
    ring_coo = sorted(i for i in atoms if labels[i] == "Cring")
    if len(ring_coo) != 3:
        raise BuildError("mof crystal: a linker does not have 3 ring C-COO atoms")
    # walk the ring: C1 (C-COO) -> C2 (C-H) -> C3 (C-COO) ...
    ring = [ring_coo[0]]
    prev = None
    while len(ring) < 6:
        cur = ring[-1]
        nxt = sorted(j for j in bonded[cur] if labels[j] in ("Cring", "CH") and j != prev and j not in ring)
        if not nxt:
            raise BuildError("mof crystal: linker ring is not a 6-ring")
        prev = cur
        ring.append(nxt[0])
    carb = [next(j for j in bonded[c] if labels[j] == "Ccarb") for c in ring[0::2]]
    oxy = [o for c in carb for o in sorted(j for j in bonded[c] if labels[j] == "O")]
    hyd = [next(j for j in bonded[c] if labels[j] == "H") for c in ring[1::2]]
    order = ring + carb + oxy + hyd
    if len(order) != 18 or len(set(order)) != 18:
        raise BuildError("mof crystal: a linker is not C9H3O6")
    return order


# Linker-internal bonds by name (18 bonds).
BTC_BONDS: tuple[tuple[str, str], ...] = (
    ("C1", "C2"), ("C2", "C3"), ("C3", "C4"), ("C4", "C5"), ("C5", "C6"), ("C6", "C1"),
    ("C1", "C7"), ("C3", "C8"), ("C5", "C9"),
    ("C7", "O1"), ("C7", "O2"), ("C8", "O3"), ("C8", "O4"), ("C9", "O5"), ("C9", "O6"),
    ("C2", "H1"), ("C4", "H2"), ("C6", "H3"),
)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# force-field charges (single source: the NonbondedForce table of forcefields/mof.xml)
# ----------------------------------------------------------------------------------------------

#: Force-field atom type of each linker atom name.
BTC_TYPES = {"C1": "mof_Cring", "C3": "mof_Cring", "C5": "mof_Cring", "C2": "mof_CH", "C4": "mof_CH", "C6": "mof_CH",
             "C7": "mof_Ccarb", "C8": "mof_Ccarb", "C9": "mof_Ccarb", "H1": "mof_H", "H2": "mof_H", "H3": "mof_H",
             **{f"O{k}": "mof_O" for k in range(1, 7)}}  # fmt: skip
FMT_TYPES = {"C": "mof_Ccarb", "O1": "mof_O", "O2": "mof_O", "H": "mof_Hfmt"}
METAL_TYPES = {"Fe": "mof_Fe", "Ni": "mof_Ni", "Cu": "mof_Cu"}
#: Type of the Fe of a mixed FeNi paddlewheel: its own metal-O(TFSI) site term (forcefields/calibration.json); mof.xml
#: gives it Fe's charge and LJ, and forcefields/library.py's template matcher picks it for a residue FE bonded to a Ni.
FENI_FE_TYPE = "mof_FeNiFe"


@lru_cache(maxsize=4)
def type_charges(xml_path: str | None = None) -> dict[str, float]:
    """Charge (e) per atom type, read from the NonbondedForce table of ``forcefields/mof.xml``."""
    root = ET.parse(Path(xml_path) if xml_path else MOF_XML).getroot()
    return {a.get("type"): float(a.get("charge")) for a in root.find("NonbondedForce").iter("Atom")}


# ----------------------------------------------------------------------------------------------
# surface termination (caps)
# ----------------------------------------------------------------------------------------------

#: Carboxylates of a linker by atom name: (carboxylate C, O, O, ring C bearing it).
CARBOXYLATES = (("C7", "O1", "O2", "C1"), ("C8", "O3", "O4", "C3"), ("C9", "O5", "O6", "C5"))

#: Formate cap C-H (Angstrom): C(sp2)-H of formate, 1.09 A (the OPLS-AA HC-C(=O) bond length; gas-phase
#: formic acid 1.097 A). C and O keep their crystal positions (C-O 1.25 A, O-C-O 125 degrees).
FORMATE_C_H_ANGSTROM = 1.09


def _near(p: np.ndarray, q: np.ndarray, cut_angstrom: float) -> np.ndarray:
    """(len(p), len(q)) bool: pairs closer than cut, minimum image in x/y (period 1), none in z."""
    d = p[:, None, :] - q[None, :, :]
    d[..., :2] -= np.round(d[..., :2])
    return np.linalg.norm(d * A_CELL_ANGSTROM, axis=2) < cut_angstrom


def _column_caps(z0: float, half_width: float, column) -> tuple[list[np.ndarray], int]:
    """Formate caps of one cell column of the slab (module doc, "Surface termination"), as (C, O, O, H)
    fractional positions, and the number of slab-linker carboxylates that bind no slab metal.

    A carboxylate of a linker outside the slab that binds a paddlewheel inside it becomes a formate on
    that paddlewheel: its C and O at their crystal positions, the H along the lost C-C(ring) bond.
    """
    cut = BOND_CUTOFF_ANGSTROM[frozenset(("M", "O"))]
    inside = {(id(unit), float(s[2])) for unit, s in column}
    metals = np.concatenate([unit.frac + s for unit, s in column if unit.kind == "PW"] or [np.zeros((0, 3))])
    caps: list[np.ndarray] = []
    n_free = 0
    for unit, s in _column(z0, half_width + 1.0):
        if unit.kind != "BTC":
            continue
        xyz = dict(zip(unit.names, unit.frac + s))
        mine = (id(unit), float(s[2])) in inside
        for c, o1, o2, ring in CARBOXYLATES:
            o = np.array([xyz[o1], xyz[o2]])
            hits = _near(o, metals, cut)
            if mine:
                n_free += int(not hits.any())
                continue
            if not hits.any():
                continue
            k = int(np.argwhere(hits)[0][1])
            img = np.zeros(3)
            img[:2] = np.round((o[0] - metals[k])[:2])  # bring the cap next to its metal
            ca = xyz[c] - img
            if any(np.allclose(_min_image(ca - q[0])[:2], 0, atol=1e-6) and abs(ca[2] - q[0][2]) < 1e-6 for q in caps):
                continue  # the same carboxylate seen from a periodic image
            bond = (xyz[ring] - xyz[c]) / np.linalg.norm(xyz[ring] - xyz[c])
            h = ca + FORMATE_C_H_ANGSTROM / A_CELL_ANGSTROM * bond
            caps.append(np.array([ca, o[0] - img, o[1] - img, h]))
    return caps, n_free


# ----------------------------------------------------------------------------------------------
# slab window: whole unit layers symmetric about a z-mirror (or z-glide) plane, capped neutral
# ----------------------------------------------------------------------------------------------

#: Symmetry planes of Fm-3m perpendicular to z about which the slab is cut, as (z0 fractional, name):
#: the plane's operation maps z0 + dz onto z0 - dz and the crystal onto itself. z = 0 is the mirror
#: m_z (z = 1/2 is the same plane up to a centring translation); z = 1/4 is the glide plane (m_z
#: followed by the centring translation (1/2, 0, 1/2)).
SLAB_PLANES: tuple[tuple[float, str], ...] = ((0.0, "mirror z=0"), (0.25, "glide z=1/4"))
_LAYER_TOL = 1e-6  # fractional; unit-centre layers are >= 0.09 apart


@dataclass(frozen=True)
class SlabCut:
    """How the slab was cut from the crystal (fractional units of a unless stated)."""

    plane: str  # SLAB_PLANES name
    z0: float  # fractional z of the symmetry plane
    half_width: float  # outermost unit-centre layer kept, |z_centre - z0|
    n_formate: int  # formate caps per cell column (both faces)
    thickness_nm: float  # z extent of the atom centres of the units (caps excluded)


def _column(z0: float, reach: float) -> list[tuple[_Unit, np.ndarray]]:
    """Units of one x/y cell column with centre z within z0 +- reach: (unit, integer z shift)."""
    out = []
    for k in range(int(np.floor(z0 - reach)) - 2, int(np.ceil(z0 + reach)) + 2):
        shift = np.array([0.0, 0.0, float(k)])
        for unit in _cell_units():
            if abs(unit.centre[2] + k - z0) <= reach + _LAYER_TOL:
                out.append((unit, shift))
    return out


def _unit_charge(kind: str) -> float:
    """Charge (e) of a paddlewheel or linker; the cut is metal-independent because Fe, Ni and Cu carry
    the same charge in forcefields/mof.xml (checked here)."""
    q = type_charges()
    metal_q = {q[t] for t in (*METAL_TYPES.values(), FENI_FE_TYPE)}
    if len(metal_q) != 1:
        raise BuildError(f"mof slab: forcefields/mof.xml metal charges differ ({sorted(metal_q)}); the slab cut assumes one")
    return 2.0 * metal_q.pop() if kind == "PW" else sum(q[BTC_TYPES[n]] for n in _BTC_NAME_ORDER)


def _cut_candidates(nz: int) -> list[tuple[SlabCut, list[tuple[_Unit, np.ndarray]]]]:
    """Every cut made of whole unit-centre layers |dz| <= d about a SLAB_PLANES plane (d up to nz/2 + 1/2)
    that leaves no linker carboxylate unbound and is charge-neutral once capped (module doc)."""
    a_nm = angstrom_to_nm(A_CELL_ANGSTROM)
    out = []
    for z0, name in SLAB_PLANES:
        column = _column(z0, 0.5 * nz + 0.5)
        dz = np.array([unit.centre[2] + s[2] - z0 for unit, s in column])
        for d in sorted({round(abs(v), 6) for v in dz}):
            units = [c for c, v in zip(column, dz) if abs(v) <= d + _LAYER_TOL]
            caps, n_free = _column_caps(z0, d, units)
            q_fmt = sum(type_charges()[t] for t in FMT_TYPES.values())
            q = sum(_unit_charge(unit.kind) for unit, _ in units) + len(caps) * q_fmt
            if n_free or abs(q) > 1e-9:
                continue
            z_atoms = np.concatenate([unit.frac[:, 2] + s[2] for unit, s in units])
            out.append((SlabCut(name, z0, float(d), len(caps), float(np.ptp(z_atoms) * a_nm)), units))
    return out


@lru_cache(maxsize=8)
def slab_cut(nz: int) -> tuple[SlabCut, tuple[tuple[_Unit, np.ndarray], ...]]:
    """The capped-neutral symmetric cut whose thickness is nearest nz * a (module doc), and its units;
    ties prefer the mirror plane."""
    a_nm = angstrom_to_nm(A_CELL_ANGSTROM)
    candidates = _cut_candidates(nz)
    if not candidates:
        raise BuildError(f"mof_cells: no charge-neutral symmetric slab found for {nz} cells in z")
    cut, units = min(candidates, key=lambda c: (round(abs(c[0].thickness_nm - nz * a_nm), 9), c[0].z0))
    return cut, tuple(units)


# ----------------------------------------------------------------------------------------------
# slab
# ----------------------------------------------------------------------------------------------


def _check_args(metal, cells) -> tuple[int, int, int]:
    if metal not in METALS:
        raise ConfigError(one_of("mof_metal", metal, METALS))
    try:
        cells_t = tuple(int(c) for c in cells)
    except (TypeError, ValueError):
        raise ConfigError(f"mof_cells: {cells!r} is not allowed; allowed values: three integers >= 1") from None
    if len(cells_t) != 3 or any(c < 1 for c in cells_t) or any(c != c0 for c, c0 in zip(cells_t, cells)):
        raise ConfigError(f"mof_cells: {cells!r} is not allowed; allowed values: three integers >= 1")
    return cells_t  # type: ignore[return-value]


def build_slab(metal: str, cells: tuple[int, int, int]) -> MofSlab:
    """Build a capped M3(BTC)2 slab of ``cells`` = (nx, ny, nz) conventional cells, z the slab normal.

    ``metal`` is one of ``FeNi`` (one Fe and one Ni per paddlewheel), ``Fe``, ``Ni``, ``Cu``.
    """
    nx, ny, nz = _check_args(metal, cells)
    a_nm = angstrom_to_nm(A_CELL_ANGSTROM)
    cut, column = slab_cut(nz)
    caps, _ = _column_caps(cut.z0, cut.half_width, column)
    top = app.Topology()
    chain = top.addChain("M")
    positions: list[np.ndarray] = []
    types: list[str] = []
    o_atoms: list[app.topology.Atom] = []
    el = app.Element.getBySymbol
    wheels = []
    for j in range(ny):
        for i in range(nx):
            shift_xy = np.array([i, j, 0.0])
            for unit, s in column:
                if unit.kind != "BTC":
                    continue
                res = top.addResidue("BTC", chain)
                by_name = {}
                for name, p in zip(unit.names, unit.frac + s + shift_xy):
                    by_name[name] = top.addAtom(name, el(name[0]), res)
                    positions.append(p * a_nm)
                    types.append(BTC_TYPES[name])
                    if name[0] == "O":
                        o_atoms.append(by_name[name])
                for a1, a2 in BTC_BONDS:
                    top.addBond(by_name[a1], by_name[a2])
            wheels += [(unit.frac + s + shift_xy) * a_nm for unit, s in column if unit.kind == "PW"]
    wheels.sort(key=lambda xyz: tuple(round(v, 6) for v in xyz.mean(axis=0)[::-1]))  # by centre (z, y, x)

    metal_atoms: list[app.topology.Atom] = []
    axial: list[np.ndarray] = []
    for w, xyz in enumerate(wheels):
        upper = _upper_end(xyz)
        pair_atoms = []
        for end in (0, 1):
            if metal == "FeNi":
                sym = "Fe" if (end == upper) == (w % 2 == 0) else "Ni"
            else:
                sym = metal
            name = _METAL_RESNAME[sym]
            res = top.addResidue(name, chain)
            atom = top.addAtom(name, el(sym), res)
            pair_atoms.append(atom)
            metal_atoms.append(atom)
            positions.append(xyz[end])
            types.append(FENI_FE_TYPE if metal == "FeNi" and sym == "Fe" else METAL_TYPES[sym])
            d = xyz[end] - xyz[1 - end]
            axial.append(d / np.linalg.norm(d))
        top.addBond(pair_atoms[0], pair_atoms[1])

    for j in range(ny):
        for i in range(nx):
            for cap in caps:
                res = top.addResidue("FMT", chain)
                atoms = {name: top.addAtom(name, el(name[0]), res) for name in FMT_TYPES}
                positions += list((cap + np.array([i, j, 0.0])) * a_nm)
                types += list(FMT_TYPES.values())
                for name in ("O1", "O2", "H"):
                    top.addBond(atoms["C"], atoms[name])
                o_atoms += [atoms["O1"], atoms["O2"]]

    pos = np.asarray(positions)
    box = np.array([nx * a_nm, ny * a_nm])
    # metal-carboxylate bonds (linkers and formates; periodic in x/y, not in z)
    cut_nm = angstrom_to_nm(BOND_CUTOFF_ANGSTROM[frozenset(("M", "O"))])
    o_idx = np.array([a.index for a in o_atoms])
    o_pos = pos[o_idx]
    n_bonds = Counter()
    for m in metal_atoms:
        d = o_pos - pos[m.index]
        d[:, :2] -= np.round(d[:, :2] / box) * box
        for hit in np.nonzero(np.linalg.norm(d, axis=1) < cut_nm)[0]:
            top.addBond(m, o_atoms[hit])
            n_bonds[m.index] += 1
    if any(n_bonds[m.index] != 4 for m in metal_atoms):
        raise BuildError("mof slab: a paddlewheel metal has lost a carboxylate after capping (expected 4 M-O bonds each)")

    zmin = pos[:, 2].min()
    pos[:, 2] -= zmin
    thickness = float(pos[:, 2].max())
    # No periodic box on the topology: the slab is periodic in x/y only (box_x_nm, box_y_nm); the
    # composite-box builder sets the full box with its z clearance.

    mass = float(sum(a.element.mass.value_in_unit(u.dalton) for a in top.atoms()))
    q_type = type_charges()
    charges = np.array([q_type[t] for t in types])
    charge = float(charges.sum())
    if abs(charge) > 1e-9:
        raise BuildError(f"mof slab: net charge {charge:.3g} e, expected 0 (check forcefields/mof.xml)")

    site_z = pos[[m.index for m in metal_atoms], 2] + AXIAL_SITE_NM * np.asarray(axial)[:, 2]
    exposed = int(np.count_nonzero((site_z <= EXPOSED_FACE_NM) | (site_z >= thickness - EXPOSED_FACE_NM)))

    return MofSlab(
        topology=top,
        positions_nm=pos,
        box_x_nm=float(box[0]),
        box_y_nm=float(box[1]),
        thickness_nm=thickness,
        mass_amu=mass,
        charge_e=charge,
        metal=metal,
        cells=(nx, ny, nz),
        n_metal_sites_exposed=exposed,
        atom_types=types,
        charges_e=charges,
        n_formate=nx * ny * len(caps),
    )


def _upper_end(xyz: np.ndarray) -> int:
    """Index (0/1) of the paddlewheel metal with larger z, ties by larger y, then larger x."""
    d = xyz[1] - xyz[0]
    for axis in (2, 1, 0):
        if abs(d[axis]) > 1e-6:
            return 1 if d[axis] > 0 else 0
    return 0


def cell_density_g_cm3(metal: str = "Cu") -> float:
    """Density of the full M3(BTC)2 cell from element masses and a^3 (FeNi: half Fe, half Ni)."""
    if metal not in METALS:
        raise ConfigError(one_of("mof_metal", metal, METALS))
    labels, _ = _cell()
    mass_of = lambda s: app.Element.getBySymbol(s).mass.value_in_unit(u.dalton)  # noqa: E731
    m_metal = 0.5 * (mass_of("Fe") + mass_of("Ni")) if metal == "FeNi" else mass_of(metal)
    mass = sum(m_metal if lab == "M" else mass_of(SITE_ELEMENT[lab]) for lab in labels)
    return density_g_per_cm3(mass, angstrom_to_nm(A_CELL_ANGSTROM) ** 3)
