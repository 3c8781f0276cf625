"""Periodic boxes of PEO/NaTFSI, optionally on an M3(BTC)2 slab, filled by growing the chains in the box.

Plain electrolyte: a cubic box at build.start_density_g_cm3. Composite: the box's x/y are the slab's
(periodic in x/y), the slab fills z in [0, thickness] and polymer + salt fill the gap above it; through
the periodicity in z the gap touches both slab faces, so polymer sits on both. The number of chains is
then set by the MOF mass fraction (spec `chains` is ignored and that is recorded).

Filling (no packmol): the Na+ and TFSI- ions go first, at random points in random rigid orientations;
then every chain is grown atom by atom inside the periodic box (systems.molecules.peo_backbone: random
start, trans/gauche torsions, backtracking), each new atom checked by minimum image against a cell list
of everything placed before (`packing_tolerance_nm` between molecules) and against its own chain. The
packing region is the whole box, or with a slab the gap from `packing_tolerance_nm` above the slab's top
atoms to the same distance below the periodic image of its bottom atoms; since the slab lies entirely
outside the region (in z), every placed atom is at least that far from it. Molecules are written whole
(unwrapped; chains may leave [0, box) in x and y, never in z with a slab). Growing gets slow above
~0.6 g/cm3 (the last chains find little room), so with build.target_density_g_cm3 the grown box is then
compressed to that electrolyte density under a capped soft-core repulsion (:func:`_compress`). A plain
box's electrolyte is the box. A slab box is compressed in z, first until the box minus the slab's
z-extent incl. vdW radii (the region the electrolyte was placed in) holds the target, then on until the
film's centre holds it (:func:`_compress_film_centre`): the film-centre density (spemd.slab) is what the
NPT plateau test, the analysis and the study compare with a plain box, and the compressed electrolyte is
densest against the slab's rough faces, so the first step leaves the centre ~4 % light. On the default
CPE box (six seeds) the second step shrinks the box from 6.69 nm to 6.25-6.44 nm, about where the old
build's 32 ps NPT stage had taken it (6.35-6.43 nm). Paper scale: benchmarks/build_speed.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as u
from scipy import sparse
from scipy.spatial import cKDTree

from spemd import units
from spemd.errors import BuildError, ConfigError, one_of
from spemd.files import atomic_path, write_json_atomic
from spemd.provenance import provenance
from spemd.slab import FILM_CENTRE_CLEARANCE_NM, VDW_RADIUS_NM, film_centre_band
from spemd.resources import forcefield_xml
from spemd.systems import molecules

MOF_METALS = ("FeNi", "Fe", "Ni", "Cu")
MAX_MOF_WT_PERCENT = 50.0
WT_TOLERANCE_PERCENT = 0.5
# Whole ions only: an EO:Na achieved further than this (relative) from eo_per_na is a composition not met
EO_PER_NA_TOLERANCE = 0.25
# Non-bonded atoms (more than three bonds apart) closer than this mean a failed build.
MIN_PAIR_NM = 0.1
# Fresh starts of a chain that got stuck, and random (position, orientation) tries per ion.
CHAIN_TRIES = 20
ION_TRIES = 2000
# Chains start at the emptiest of START_POOL x (tries per batch) random points: fewest atoms within START_PROBE_NM.
START_POOL = 4
START_PROBE_NM = 0.6
# Soft-core compression after growing (see _compress): per-atom contact radii (nm; a pair repels below the
# sum, r_H + r_H = 0.22, heavy-heavy 0.30 nm, about where OPLS/CL&P LJ pairs reach ~kT), the capped
# repulsion's height, the restraint on pairs within three bonds, and the number of compression steps.
SOFT_RADIUS_NM = {"H": 0.11}
SOFT_RADIUS_HEAVY_NM = 0.15
SOFT_EPS_KJ_MOL = 200.0
BONDED_K_KJ_MOL_NM2 = 5.0e4
COMPRESS_STEP_VOLUME = 0.10  # at most 10 % volume per step
COMPRESS_MIN_ITERATIONS = 100
# Slab boxes: rounds of further z compression until the film centre is within this fraction of the target.
FILM_CENTRE_ROUNDS = 8
FILM_CENTRE_TOLERANCE = 0.005
MAX_FILM_CENTRE_STEP = 0.1  # of the film's thickness per round


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


def _check_salt(key: str, total_eo: int, n_salt: int, eo_per_na: float) -> None:
    """BuildError when whole Na+ ions cannot give EO:Na = eo_per_na within EO_PER_NA_TOLERANCE."""
    achieved = total_eo / n_salt
    if abs(achieved - eo_per_na) > EO_PER_NA_TOLERANCE * eo_per_na:
        raise BuildError(
            f"{key}.eo_per_na: {eo_per_na:g} cannot be met with {total_eo} EO (closest: {n_salt} Na+, "
            f"EO:Na = {achieved:.4g}, off by more than {EO_PER_NA_TOLERANCE:.0%}); use more or longer chains "
            "or a smaller eo_per_na"
        )


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


class _BoxSurroundings(molecules.Surroundings):
    """The periodic box being filled: a cell list of the atoms placed so far (wrapped into the box) and
    the region [lo, hi] (nm) new atoms must lie in (wrapped; the whole box without a slab).

    New atoms must keep `tol` (minimum image) from every placed atom; the cells are at least
    `reach + tol` wide, so a candidate's neighbours lie in the 3 x 3 x 3 cells around it.
    """

    def __init__(self, box, lo, hi, tol, reach):
        self.box_nm = np.asarray(box, dtype=float)
        self.lo, self.hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
        self.tol = float(tol)
        self.n_cells = np.maximum(1, np.floor(self.box_nm / (reach + self.tol)).astype(int))
        self.cell_nm = self.box_nm / self.n_cells
        self.slots = np.full((*self.n_cells, 16), -1, dtype=np.int64)
        self.filled = np.zeros(self.n_cells, dtype=np.int64)
        self.xyz = np.zeros((1024, 3))
        self.size = 0
        self._cache: dict = {}  # (cell, radius) -> neighbours, until the next add

    def wrap(self, xyz):
        return xyz - np.floor(xyz / self.box_nm) * self.box_nm

    def add(self, xyz) -> None:
        """Place atoms xyz (M, 3) (any periodic image)."""
        w = self.wrap(np.asarray(xyz, dtype=float).reshape(-1, 3))
        self._cache.clear()
        while self.size + len(w) > len(self.xyz):
            self.xyz = np.concatenate([self.xyz, np.zeros_like(self.xyz)])
        cells = np.minimum((w / self.cell_nm).astype(int), self.n_cells - 1)
        for p, c in zip(w, map(tuple, cells)):
            k = self.filled[c]
            if k == self.slots.shape[-1]:
                self.slots = np.concatenate([self.slots, np.full_like(self.slots, -1)], axis=-1)
            self.slots[c + (k,)] = self.size
            self.filled[c] = k + 1
            self.xyz[self.size] = p
            self.size += 1

    def _near(self, centre, radius) -> np.ndarray:
        """Placed atoms (wrapped) in the cells within `radius` of `centre`."""
        c = np.minimum((self.wrap(centre) / self.cell_nm).astype(int), self.n_cells - 1)
        key = (*c, radius)
        if key in self._cache:
            return self._cache[key]
        m = np.ceil(radius / self.cell_nm).astype(int)
        ranges = [
            np.arange(n) if 2 * mm + 1 >= n else (cc + np.arange(-mm, mm + 1)) % n
            for cc, mm, n in zip(c, m, self.n_cells)
        ]
        ids = self.slots[np.ix_(*ranges)].ravel()
        self._cache[key] = self.xyz[ids[ids >= 0]]
        return self._cache[key]

    def starts(self, rng, k):
        """k random points in the region, the emptiest of START_POOL x k (fewest atoms within START_PROBE_NM) first."""
        pool = self.lo + rng.random((START_POOL * k, 3)) * (self.hi - self.lo)
        if self.size == 0:
            return pool[:k]
        crowd = np.empty(len(pool))
        for j, p in enumerate(pool):
            d = self._near(p, START_PROBE_NM) - self.wrap(p)
            d -= np.round(d / self.box_nm) * self.box_nm
            crowd[j] = np.count_nonzero(np.einsum("oi,oi->o", d, d) < START_PROBE_NM**2)
        return pool[np.argsort(crowd, kind="stable")[:k]]

    def clear(self, xyz, centre, reach_nm):
        xyz = np.asarray(xyz, dtype=float)
        w = self.wrap(xyz)
        ok = np.all((w >= self.lo) & (w <= self.hi), axis=(1, 2))
        centre = np.asarray(centre, dtype=float)
        if centre.ndim == 2:  # candidates far apart: one neighbourhood each
            for k in np.flatnonzero(ok):
                ok[k] = self.clear(xyz[k : k + 1], centre[k], reach_nm)[0]
            return ok
        if ok.any():
            # neighbours as minimum-image vectors from the centre; candidates are within reach_nm of it
            near = self._near(centre, reach_nm + self.tol) - self.wrap(centre)
            near -= np.round(near / self.box_nm) * self.box_nm
            d = (xyz[ok] - centre)[:, :, None, :] - near[None, None, :, :]
            ok[ok] = np.all(np.einsum("kmoi,kmoi->kmo", d, d) >= self.tol * self.tol, axis=(1, 2))
        return ok


def _random_rotations(rng, k: int) -> np.ndarray:
    """k uniformly random rotation matrices (k, 3, 3), from normalised Gaussian quaternions."""
    q = rng.normal(size=(k, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=1,
    )


def _place_rigid(env: _BoxSurroundings, mol, rng, key: str, advice: str) -> np.ndarray:
    """Put rigid `mol` at a random free point in a random orientation; returns its positions (nm)."""
    body = mol.positions_nm - mol.positions_nm.mean(axis=0)
    reach = float(np.max(np.linalg.norm(body, axis=1)))
    k = molecules.TRIALS_PER_BATCH
    for _ in range(ION_TRIES // k):
        centres = env.starts(rng, k)
        xyz = centres[:, None, :] + (body @ np.transpose(_random_rotations(rng, k), (0, 2, 1)) if len(body) > 1 else body)
        ok = env.clear(xyz, centres, reach)
        if ok.any():
            placed = xyz[int(np.argmax(ok))]
            env.add(placed)
            return placed
    raise BuildError(f"{key}: no free space for {mol.name} after {ION_TRIES} tries; {advice}")


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


def _within_three_bonds(topology: app.Topology) -> np.ndarray:
    """Sorted keys i * n + j (i < j) of the atom pairs at most three bonds apart."""
    n = topology.getNumAtoms()
    ij = np.array([(a.index, b.index) for a, b in topology.bonds()], dtype=np.int64).reshape(-1, 2)
    adj = sparse.coo_matrix((np.ones(2 * len(ij)), (np.r_[ij[:, 0], ij[:, 1]], np.r_[ij[:, 1], ij[:, 0]])), shape=(n, n))
    adj = (adj + sparse.identity(n)).tocsr()
    reach = sparse.triu((adj @ adj @ adj).tocsr(), k=1).tocoo()
    return np.unique(reach.row.astype(np.int64) * n + reach.col)


def min_nonbonded_distance_nm(topology: app.Topology, xyz_nm: np.ndarray, box_nm, within_nm: float = 0.5):
    """Shortest minimum-image distance between atoms more than three bonds apart (inf if none within)."""
    xyz_nm = np.asarray(xyz_nm, dtype=float)
    box = np.asarray(box_nm, dtype=float)
    tree = cKDTree(np.mod(xyz_nm, box), boxsize=box)
    pairs = np.sort(tree.query_pairs(within_nm, output_type="ndarray"), axis=1).astype(np.int64)
    if len(pairs) == 0:
        return float("inf")
    bonded = _within_three_bonds(topology)
    keys = pairs[:, 0] * len(xyz_nm) + pairs[:, 1]
    at = np.minimum(np.searchsorted(bonded, keys), max(len(bonded) - 1, 0))
    free = pairs[bonded[at] != keys] if len(bonded) else pairs
    if len(free) == 0:
        return float("inf")
    d = xyz_nm[free[:, 0]] - xyz_nm[free[:, 1]]
    d -= np.round(d / box) * box
    return float(np.min(np.linalg.norm(d, axis=1)))


def slab_extent_nm(slab) -> tuple[float, float]:
    """(lowest, highest) z (nm) the slab's atoms reach, their van der Waals radii included."""
    r = np.array([VDW_RADIUS_NM[a.element.symbol.upper()] for a in slab.topology.atoms()])
    z = slab.positions_nm[:, 2]
    return float(np.min(z - r)), float(np.max(z + r))


def _film_centre_density(top: app.Topology, xyz: np.ndarray, box: np.ndarray, n_fixed: int) -> tuple[float, float]:
    """(film-centre density g/cm3, band thickness nm) of a slab box whose first `n_fixed` atoms are the slab."""
    masses = np.array([a.element.mass.value_in_unit(u.dalton) for a in top.atoms()])[n_fixed:]
    inside, thickness = film_centre_band(xyz[n_fixed:, 2], xyz[:n_fixed, 2], box[2])
    return units.density_g_per_cm3(float(masses[inside].sum()), box[0] * box[1] * thickness), thickness


def _compress_film_centre(top, xyz, box, n_fixed: int, slab_hi: float, target: float, key: str, cutoff_nm: float):
    """Compress a slab box further in z until its film centre holds `target` (within FILM_CENTRE_TOLERANCE).

    The box minus the slab's z-extent is what the first compression filled to `target`; the film's centre,
    which the analysis, the NPT plateau test and the study compare with a plain box (spemd.slab), is left
    ~4 % lighter (1.105 against 1.15 on the default CPE box), since the compressed electrolyte is densest
    against the slab's rough faces. Each round scales the film by rho / target, the step that would be
    exact for a uniform film (at most MAX_FILM_CENTRE_STEP of it), so the centre approaches the target
    from below (a secant step overshot by up to 3 %: a chain entering the band of the default box adds
    ~3 % to it). Returns (xyz, box, rounds run); BuildError when FILM_CENTRE_ROUNDS do not reach the target.
    """
    rho, band = _film_centre_density(top, xyz, box, n_fixed)
    for rounds in range(FILM_CENTRE_ROUNDS + 1):
        if rho >= target * (1.0 - FILM_CENTRE_TOLERANCE):
            return xyz, box, rounds
        if rounds == FILM_CENTRE_ROUNDS:
            break
        film = band + 2 * FILM_CENTRE_CLEARANCE_NM
        step = min(film * (1.0 - rho / target), MAX_FILM_CENTRE_STEP * film)  # nm of z to remove
        new_box = np.array([box[0], box[1], box[2] - step])
        if new_box[2] <= 2.0 * cutoff_nm:
            raise BuildError(f"{key}.mof_wt_percent: box height {new_box[2]:.3f} nm with the film centre at "
                             f"build.target_density_g_cm3 = {target:g} is not above 2 x forcefield.nonbonded_cutoff_nm "
                             f"({cutoff_nm})")
        xyz, box = _compress(top, xyz, box, n_fixed, new_box, slab_hi), new_box
        rho, band = _film_centre_density(top, xyz, box, n_fixed)
    raise BuildError(f"{key}: the film centre reached {rho:.4f} g/cm3 after {FILM_CENTRE_ROUNDS} compressions in z, "
                     f"not build.target_density_g_cm3 = {target:g}; lower the target or use a thicker film "
                     "(a lower mof_wt_percent)")


def _compress(top: app.Topology, xyz: np.ndarray, box: np.ndarray, n_fixed: int, target_box: np.ndarray,
              z_anchor: float | None) -> np.ndarray:
    """Shrink the grown box to `target_box` under a capped soft-core repulsion; returns the new positions.

    Growing chains at the melt density fails (the last chains find no room), so the box is grown dilute
    and compressed: in steps of at most COMPRESS_STEP_VOLUME the molecules' centres of mass are scaled
    with the box (all three axes for a plain box; only z above `z_anchor`, the slab's top, with a slab,
    whose x/y are fixed by its lattice) and the overlaps this creates are pushed off by energy
    minimisation of E = eps (1 - r/s)^2 (r < s, s = r_i + r_j, SOFT_RADIUS_NM) between atoms more than
    three bonds apart, with harmonic restraints holding every pair within three bonds at its grown
    distance (bond lengths, angles and torsions keep their grown values). The first `n_fixed` atoms
    (the slab) have zero mass, so the minimiser leaves them in place. The full force field takes over in
    the workflow's minimise step.
    """
    import openmm

    n = len(xyz)
    system = openmm.System()
    for atom in top.atoms():
        system.addParticle(0.0 if atom.index < n_fixed else atom.element.mass.value_in_unit(u.dalton))
    soft = openmm.CustomNonbondedForce(f"{SOFT_EPS_KJ_MOL}*(1-r/s)^2*step(s-r); s=ra1+ra2")
    soft.addPerParticleParameter("ra")
    for atom in top.atoms():
        soft.addParticle([SOFT_RADIUS_NM.get(atom.element.symbol, SOFT_RADIUS_HEAVY_NM)])
    soft.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    soft.setCutoffDistance(2 * max(SOFT_RADIUS_HEAVY_NM, *SOFT_RADIUS_NM.values()))
    restraint = openmm.HarmonicBondForce()
    keys = _within_three_bonds(top)
    ii, jj = keys // n, keys % n
    d = xyz[ii] - xyz[jj]
    d -= np.round(d / box) * box
    lengths = np.linalg.norm(d, axis=1)
    for i, j, r0 in zip(ii.tolist(), jj.tolist(), lengths.tolist()):
        soft.addExclusion(i, j)
        if j >= n_fixed:  # both fixed: nothing to hold
            restraint.addBond(i, j, r0, BONDED_K_KJ_MOL_NM2)
    system.addForce(soft)
    system.addForce(restraint)
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*v) for v in np.diag(box)))
    integrator = openmm.VerletIntegrator(0.001)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": str(max(1, min(4, os.cpu_count() or 1)))})

    chains = [np.array([a.index for a in c.atoms()]) for c in top.chains()]
    chains = [c for c in chains if c[0] >= n_fixed]
    masses = np.array([system.getParticleMass(i).value_in_unit(u.dalton) for i in range(n)])
    ratio = float(np.prod(target_box) / np.prod(box))
    n_steps = max(1, int(np.ceil(np.log(ratio) / np.log(1.0 - COMPRESS_STEP_VOLUME))))
    pos, cur = xyz.copy(), box.astype(float).copy()
    for k in range(1, n_steps + 1):
        new = box * (target_box / box) ** (k / n_steps)
        for c in chains:
            com = masses[c] @ pos[c] / masses[c].sum()
            if z_anchor is None:
                shift = com * (new / cur - 1.0)
            else:
                shift = np.array([0.0, 0.0, (com[2] - z_anchor) * ((new[2] - z_anchor) / (cur[2] - z_anchor) - 1.0)])
            pos[c] += shift
        cur = new
        context.setPeriodicBoxVectors(*(openmm.Vec3(*v) for v in np.diag(cur)))
        context.setPositions(pos)
        openmm.LocalEnergyMinimizer.minimize(context, 1.0, COMPRESS_MIN_ITERATIONS)
        pos = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    return np.asarray(pos, dtype=float)


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
    density = float(build_cfg.get("start_density_g_cm3", 0.5))
    target = build_cfg.get("target_density_g_cm3")
    target = None if target is None or float(target) <= density else float(target)
    tol = float(build_cfg.get("packing_tolerance_nm", 0.2))
    rng = np.random.default_rng(seed)
    na, tfsi = molecules.sodium(), molecules.tfsi()

    slab = None
    if wt > 0:
        from spemd.systems.mof import build_slab

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
        if target is not None and units.volume_nm3_for_density(other_mass, target) ** (1 / 3) <= 2.0 * cutoff_nm:
            raise BuildError(f"{key}.chains: the box compressed to build.target_density_g_cm3 = {target:g} is not "
                             f"above 2 x forcefield.nonbonded_cutoff_nm ({cutoff_nm}); use more chains")
    _check_salt(key, sum(chain_eo), n_salt, eo_per_na)
    if box[2] <= 2.0 * cutoff_nm:
        raise BuildError(f"{key}.mof_wt_percent: box height {box[2]:.3f} nm is not above 2 x forcefield.nonbonded_cutoff_nm ({cutoff_nm})")

    # Ions first (random points, random orientations), then the chains grown around them; both only
    # in the packing region (the gap above the slab) and `tol` from everything placed before.
    env = _BoxSurroundings(box, region_lo, region_hi, tol, molecules.STEP_REACH_NM)
    advice = "lower build.start_density_g_cm3 or build.packing_tolerance_nm"
    na_xyz = [_place_rigid(env, na, rng, key, advice) for _ in range(n_salt)]
    tfsi_xyz = [_place_rigid(env, tfsi, rng, key, advice) for _ in range(n_salt)]
    chains, chain_xyz = [], []
    for c, n in enumerate(chain_eo):
        for _ in range(CHAIN_TRIES):
            bb = molecules.peo_backbone(n, rng, env)
            if bb is not None:
                break
        else:
            raise BuildError(
                f"{key}: could not grow PEO chain {c + 1} of {len(chain_eo)} ({n} EO) into the box at "
                f"build.start_density_g_cm3 = {density:g}; {advice}"
            )
        chains.append(molecules.peo_molecule(n, bb))
        chain_xyz.append(chains[-1].positions_nm)
        env.add(chain_xyz[-1])
    parts = ([] if slab is None else [slab.positions_nm]) + chain_xyz + na_xyz + tfsi_xyz
    xyz = np.vstack(parts)

    top = app.Topology()
    if slab is not None:
        _append(top, slab.topology)
    for c in chains:
        _append(top, c.topology)
    for mol in [na] * n_salt + [tfsi] * n_salt:
        _append(top, mol.topology)
    # Compress to the target electrolyte density (volume outside the slab's z-extent incl. vdW radii)
    slab_lo, slab_hi = slab_extent_nm(slab) if slab is not None else (0.0, 0.0)
    e_volume = lambda b: float(np.prod(b)) * (1.0 - (slab_hi - slab_lo) / b[2])  # noqa: E731
    film_centre_rounds = 0
    if target is not None:
        want = units.volume_nm3_for_density(other_mass, target)
        if slab is None:
            target_box = np.full(3, want ** (1.0 / 3.0))
        else:
            target_box = np.array([box[0], box[1], (slab_hi - slab_lo) + want / (box[0] * box[1])])
            if target_box[2] <= 2.0 * cutoff_nm:
                raise BuildError(f"{key}.mof_wt_percent: box height {target_box[2]:.3f} nm at build.target_density_g_cm3 "
                                 f"= {target:g} is not above 2 x forcefield.nonbonded_cutoff_nm ({cutoff_nm})")
        xyz = _compress(top, xyz, box, 0 if slab is None else len(slab.positions_nm), target_box,
                        None if slab is None else slab_hi)
        box = target_box
        if slab is not None:
            xyz, box, film_centre_rounds = _compress_film_centre(top, xyz, box, len(slab.positions_nm), slab_hi, target, key, cutoff_nm)
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
        "target_density_g_cm3": target,
        # the density build.target_density_g_cm3 sets: the box's, or a slab box's film centre (spemd.slab)
        "electrolyte_density_g_cm3": units.density_g_per_cm3(masses["peo"] + masses["salt"], volume) if slab is None
        else _film_centre_density(top, xyz, box, len(slab.positions_nm))[0],
        "electrolyte_density_measure": "box" if slab is None else "film centre (spemd.slab.film_centre_density_g_cm3)",
        "film_centre_compression_rounds": film_centre_rounds,
        # a slab box's region outside the slab's z-extent incl. vdW radii, and the electrolyte's density in it
        "electrolyte_volume_nm3": e_volume(box),
        "outside_slab_extent_density_g_cm3": units.density_g_per_cm3(masses["peo"] + masses["salt"], e_volume(box)),
        "packing_tolerance_nm": tol,
        "min_nonbonded_distance_nm": d_min,
        "provenance": provenance(
            seed=seed,
            config={"system": name, "spec": spec, "build": build_cfg, "nonbonded_cutoff_nm": cutoff_nm},
            # the XML the builder read: TFSI- relaxed with tfsi.xml; slab types/charges from mof.xml
            forcefield_files=[forcefield_xml("tfsi.xml")] + ([forcefield_xml("mof.xml")] if slab is not None else []),
            extra={"builder": "ions placed, then chains grown in the periodic box (systems.build)"},
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
