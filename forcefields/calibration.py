"""Adsorption energy of one TFSI- on the capped M3(BTC)2 slab, and the targets of the site terms.

The metal-O(TFSI) site terms are fitted on paddlewheel clusters (forcefields/cluster_calibration.py) to
the DFT adsorption energies (Dong et al., EES Batteries 2025: Fe-MOF -0.27 eV, Ni-MOF -0.55 eV; Fe-Ni
binds most strongly, no number given: project default -0.70 eV, overridable in calibration.targets_eV).
The slab's E_ads computed here is the validation of those terms (docs/calibration.md), not a fit target;
the cluster fit reuses this module's minimiser and pair helpers.

Force-field adsorption energy (:func:`adsorption_energy_details`)
-----------------------------------------------------------------
* One capped, neutral, mirror-symmetric 1x1x1 slab (``systems.mof.build_slab``), periodic in x/y, in a
  box of height ``thickness + vacuum_nm`` (vacuum >= 3 nm), plus one TFSI-; parametrised with
  ``forcefields.parametrise.create_system`` (plain Ewald, the config's charge scales, geometric LJ mixing
  plus the metal-O(TFSI) overrides); the MOF is rigid (zero masses). The slab has no z dipole, so no
  slab correction is applied (tests check that the vacuum is flat).
* Starts (:func:`_bound_starts`): for each site (the axial open site of one exposed top-face metal per
  metal element of the model, ``systems.mof.AXIAL_SITE_NM`` out along the M-M axis) the binding O sits
  on the site, for every combination of CONFORMERS (trans, the C2 template, and cis), BINDING_OXYGENS
  (both O of each SO2), BOND_DIRECTIONS_DEG (directions of the O->S bond: along the open-site axis, 45
  deg up, 20 deg down, 20 deg up and 40 deg to either side) and N_ROTATIONS rotations about that bond;
  starts with a TFSI atom within CLASH_NM of the slab are dropped (deterministically). Seeds (given
  TFSI coordinates, e.g. the pose library of a fit) are added as further starts.
* Minimiser (:func:`_minimised_energy`): preconditioned L-BFGS on the free atoms. OpenMM's
  LocalEnergyMinimizer stops on this system with the soft rigid-body modes of the anion unrelaxed,
  measured 4-30 kJ/mol (0.04-0.3 eV) above the minimum the same start reaches here; that, not the slab,
  was the main source of the "pose jumps" of the earlier protocol (docs/calibration.md).
* A pose counts as adsorbed if a TFSI O ends within :func:`bound_distance_nm` of a model metal
  (max(BOUND_NM, BOUND_SIGMA_FACTOR x pair sigma)); E_bound is the lowest adsorbed pose.
* Reference: the same system with the TFSI- minimised in mid-vacuum (>= FAR_CLEARANCE_NM from the slab,
  beyond the cutoff), its N held. E_ads = E_bound - E_far (kJ/mol and eV).
* Reproducibility: plain Ewald (not PME) on ONE CPU thread, so that the same inputs give the same E_ads
  bit for bit (PME's timed FFT plans do not).

Distance curves (:func:`distance_curve`): E_ads with the binding O - metal distance restrained.
"""

from __future__ import annotations

import copy
import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
from scipy.optimize import minimize

from spemd.forcefields.library import xml_path
from spemd.forcefields.parametrise import METAL_TYPES, TFSI_O_TYPE, create_system
from spemd.errors import BuildError, ConfigError, SimulationError, one_of
from spemd.units import KJ_PER_MOL_PER_EV
from spemd.systems import molecules
from spemd.systems.build import _append
from spemd.systems.mof import AXIAL_SITE_NM, EXPOSED_FACE_NM, METALS, build_slab

log = logging.getLogger(__name__)

#: Paper targets (eV), Dong et al., EES Batteries 2025 (DFT); FeNi has none (the paper gives no number).
PAPER_TARGETS_EV = {"Fe": -0.27, "Ni": -0.55}
#: Default targets: the paper's, and for FeNi a project choice (docs/calibration.md): the paper says only
#: that Fe-Ni binds TFSI- most strongly, so -0.70 eV, 0.15 eV (5 tolerances) beyond Ni. Overridable by
#: calibration.targets_eV.FeNi.
DEFAULT_TARGETS_EV = PAPER_TARGETS_EV | {"FeNi": -0.70}
FENI_TARGET_SOURCE = "project default (paper: Fe-Ni binds most strongly, no number); docs/calibration.md"
#: Metal elements whose metal-O(TFSI) pair one model's fitted parameter sets.
MODEL_METALS = {"Fe": ("Fe",), "Ni": ("Ni",), "Cu": ("Cu",), "FeNi": ("Fe", "Ni")}
CELLS = (1, 1, 1)
VACUUM_NM = 4.0
MIN_VACUUM_NM = 3.0
FAR_CLEARANCE_NM = 1.2
#: A pose counts as adsorbed if a TFSI O ends within max(BOUND_NM, BOUND_SIGMA_FACTOR * pair sigma) of a
#: metal of the model (the Coulomb pull holds the O at about 0.85 sigma for sigma >= 0.3 nm).
BOUND_NM = 0.35
BOUND_SIGMA_FACTOR = 1.25
#: Minimiser (:func:`_minimised_energy`): eigenvalue floor of the finite-difference Hessian preconditioner
#: (kJ/mol/nm^2), its step (nm), most L-BFGS restarts, the energy drop (kJ/mol) below
#: which a round ends the minimisation, and most L-BFGS-B iterations per round.
PRECONDITION_FLOOR = 100.0
HESSIAN_STEP_NM = 1e-4
MINIMISE_ROUNDS = 3
MINIMISE_ROUND_DE_KJ_MOL = 0.01
MINIMISE_MAX_ITERATIONS = 2000
#: L-BFGS-B gradient tolerance in the preconditioned coordinates (sqrt(kJ/mol)): the energy still to gain
#: is about |g_y|^2 / 2 < 45 * MINIMISE_GTOL^2 / 2 ~ 0.06 kJ/mol.
MINIMISE_GTOL = 0.05
TFSI_O_NAMES = ("O1", "O2", "O3", "O4")


def _check_metal(metal: str) -> None:
    if metal not in MODEL_METALS:
        raise ConfigError(one_of("--metal", metal, METALS))


# ------------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------------


@dataclass
class _Site:
    metal_index: int
    element: str
    face: str  # "top" or "bottom"
    position_nm: np.ndarray
    outward: np.ndarray  # unit vector along which the TFSI S-O bond points


@dataclass
class _Model:
    metal: str
    topology: app.Topology  # slab atoms first, then TFSI (15 atoms)
    slab_nm: np.ndarray
    box_nm: np.ndarray
    thickness_nm: float
    n_slab: int
    metal_indices: np.ndarray  # slab indices of the metals of the model
    sites: list[_Site]
    tfsi_nm: np.ndarray  # TFSI template, centred at the origin, contract atom order
    tfsi_names: list[str]


@lru_cache(maxsize=8)
def _model(metal: str, vacuum_nm: float) -> _Model:
    _check_metal(metal)
    if not vacuum_nm >= MIN_VACUUM_NM:
        raise ConfigError(f"vacuum_nm: {vacuum_nm!r} is out of range; must be >= {MIN_VACUUM_NM}")
    slab = build_slab(metal, CELLS)
    tfsi = molecules.tfsi()
    top = app.Topology()
    _append(top, slab.topology)
    _append(top, tfsi.topology)
    box = np.array([slab.box_x_nm, slab.box_y_nm, slab.thickness_nm + vacuum_nm])
    top.setPeriodicBoxVectors(np.diag(box) * u.nanometer)
    pos = slab.positions_nm
    atoms = list(slab.topology.atoms())
    elements = MODEL_METALS[metal]
    partner = {}
    for a, b in slab.topology.bonds():
        if a.element.symbol in METAL_TYPES and b.element.symbol in METAL_TYPES:
            partner[a.index], partner[b.index] = b.index, a.index
    sites: list[_Site] = []
    for element in elements:
        for i in sorted(partner):
            if atoms[i].element.symbol != element:
                continue
            axis = pos[i] - pos[partner[i]]
            axis /= np.linalg.norm(axis)
            site = pos[i] + AXIAL_SITE_NM * axis
            if site[2] >= slab.thickness_nm - EXPOSED_FACE_NM:
                out = axis + np.array([0.0, 0.0, 1.0])
                sites.append(_Site(i, element, "top", site, out / np.linalg.norm(out)))
                break
    if not sites:
        raise BuildError(f"mof_metal {metal}: no exposed open metal site on the top face of the 1x1x1 slab")
    metal_idx = np.array([a.index for a in atoms if a.element.symbol in elements])
    names = [a.name for a in tfsi.topology.atoms()]
    return _Model(metal, top, pos, box, slab.thickness_nm, len(atoms), metal_idx, sites, tfsi.positions_nm, names)


def _rotation_to(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation matrix turning unit vector a onto unit vector b."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-12:
        if c > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        perp /= np.linalg.norm(perp)
        return 2.0 * np.outer(perp, perp) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def _rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * k @ k


#: Systematic start set (module doc, "Starts"): TFSI conformers (trans: the C2 template; cis: its S2 half
#: turned 180 deg about N1-S2), binding oxygens (both O of each SO2), directions of the binding O -> S bond
#: as (elevation above the horizontal, azimuth from the open-site axis) in degrees, and rotations about it.
CONFORMERS = ("trans", "cis")
BINDING_OXYGENS = ("O1", "O2", "O3", "O4")
BOND_DIRECTIONS_DEG = ((0, 0), (45, 0), (-20, 0), (20, 40), (20, -40))
N_ROTATIONS = 3
#: A start is dropped when a TFSI atom other than the binding O is closer than this to a slab atom (nm).
CLASH_NM = 0.2
_SULFUR_OF = {"O1": "S1", "O2": "S1", "O3": "S2", "O4": "S2"}
_CIS_GROUP = ("O3", "O4", "C2", "F4", "F5", "F6")


def tfsi_conformer(tfsi_nm: np.ndarray, tfsi_names, name: str) -> np.ndarray:
    """TFSI- coordinates (nm) in conformer `name`: "trans" (the template) or "cis" (its S2 half turned
    180 deg about N1-S2)."""
    x = np.array(tfsi_nm, dtype=float)
    if name == "cis":
        idx = {a: i for i, a in enumerate(tfsi_names)}
        axis = x[idx["S2"]] - x[idx["N1"]]
        rot = _rotation_about(axis / np.linalg.norm(axis), math.pi)
        group = [idx[a] for a in _CIS_GROUP]
        x[group] = (x[group] - x[idx["S2"]]) @ rot.T + x[idx["S2"]]
    elif name != "trans":
        raise ConfigError(one_of("TFSI conformer", name, CONFORMERS))
    return x


def _conformer(model: _Model, name: str) -> np.ndarray:
    return tfsi_conformer(model.tfsi_nm, model.tfsi_names, name)


def _bound_starts(model: _Model, n_rotations: int = N_ROTATIONS) -> list[tuple[_Site, str, np.ndarray]]:
    """The systematic starts (module doc): (site, label, TFSI xyz), clashing starts left out."""
    names = model.tfsi_names
    starts = []
    for site in model.sites:
        h = np.array([site.outward[0], site.outward[1], 0.0])
        h /= np.linalg.norm(h)
        for conf in CONFORMERS:
            x = _conformer(model, conf)
            for oname in BINDING_OXYGENS:
                o = x[names.index(oname)]
                s = x[names.index(_SULFUR_OF[oname])]
                others = [i for i, n in enumerate(names) if n != oname]
                for elev, azim in BOND_DIRECTIONS_DEG:
                    hz = _rotation_about(np.array([0.0, 0.0, 1.0]), math.radians(azim)) @ h
                    d = math.cos(math.radians(elev)) * hz + np.array([0.0, 0.0, math.sin(math.radians(elev))])
                    align = _rotation_to((s - o) / np.linalg.norm(s - o), d)
                    for k in range(n_rotations):
                        phi = 360.0 * k / n_rotations
                        rot = _rotation_about(d, math.radians(phi)) @ align
                        xyz = (x - o) @ rot.T + site.position_nm
                        if _min_distance_to_slab(model, xyz[others]) < CLASH_NM:
                            continue
                        label = f"{site.element}{site.metal_index}/{conf}/{oname}/el{elev:+d}az{azim:+d}/rot{phi:.0f}"
                        starts.append((site, label, xyz))
    return starts


def _far_position(model: _Model, z_offset_nm: float = 0.0) -> np.ndarray:
    centre = np.array([model.box_nm[0] / 2, model.box_nm[1] / 2, model.thickness_nm + (model.box_nm[2] - model.thickness_nm) / 2])
    xyz = model.tfsi_nm + centre + np.array([0.0, 0.0, z_offset_nm])
    clearance = _min_distance_to_slab(model, xyz)
    if clearance < FAR_CLEARANCE_NM:
        raise ConfigError(
            f"vacuum_nm: mid-vacuum TFSI is {clearance:.2f} nm from the slab (< {FAR_CLEARANCE_NM} nm); use a larger vacuum"
        )
    return xyz


def _min_distance_to_slab(model: _Model, xyz: np.ndarray, indices=None) -> float:
    slab = model.slab_nm if indices is None else model.slab_nm[indices]
    d = xyz[:, None, :] - slab[None, :, :]
    d -= np.round(d / model.box_nm) * model.box_nm
    return float(np.linalg.norm(d, axis=2).min())


# ------------------------------------------------------------------------------------------------
# energies
# ------------------------------------------------------------------------------------------------


def _platform(name: str):
    try:
        platform = openmm.Platform.getPlatformByName(name)
    except Exception:  # noqa: BLE001 (OpenMM raises a plain Exception)
        raise SimulationError(f"platform: {name!r} is not available") from None
    # reproducible forces (module doc): one CPU thread; deterministic summation on CUDA
    props = {"CPU": {"Threads": "1"}, "CUDA": {"DeterministicForces": "true"}}.get(name, {})
    return platform, props


def _merged_ff(ff_cfg: dict, overrides: dict | None) -> dict:
    ff = copy.deepcopy(ff_cfg or {})
    ff["rigid_mof"] = True
    merged = dict(ff.get("metal_o_tfsi") or {})
    merged.update(copy.deepcopy(overrides or {}))
    ff["metal_o_tfsi"] = merged
    return ff


def bound_distance_nm(sigma_nm: float) -> float:
    """Largest TFSI O - metal distance (nm) at which a pose counts as adsorbed, for a pair sigma (nm)."""
    return max(BOUND_NM, BOUND_SIGMA_FACTOR * sigma_nm)


def _minimised_energy(system, xyz, platform_name: str) -> tuple[float, np.ndarray]:
    """Minimise the free (non-zero mass) atoms from `xyz`: (energy kJ/mol, positions nm).

    Preconditioned L-BFGS (module doc, "Minimiser"): OpenMM's LocalEnergyMinimizer stops on this system
    with the soft rigid-body modes of the anion unrelaxed (measured: 4-30 kJ/mol above the minimum that
    the same start reaches here), because the stiff S-O/C-F modes and the ~1e-4 kJ/mol float noise of
    the CPU energies break its line search. Here the free coordinates are changed to x = x0 + T y with
    T = V |w|^-1/2 from the forward-difference Hessian H = V w V^T at the start (|eigenvalues| floored at
    PRECONDITION_FLOOR), so that every mode has about unit curvature, and scipy's L-BFGS-B runs on y; up
    to MINIMISE_ROUNDS restarts until one lowers the energy by less than MINIMISE_ROUND_DE_KJ_MOL. Deterministic for the same inputs (one thread).
    """
    platform, props = _platform(platform_name)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, props)
    free = np.array([i for i in range(system.getNumParticles()) if system.getParticleMass(i).value_in_unit(u.dalton) > 0])
    full = np.array(xyz, dtype=float)
    kj, nm = u.kilojoule_per_mole, u.nanometer

    def energy_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        full[free] = x.reshape(-1, 3)
        ctx.setPositions(full * nm)
        state = ctx.getState(getEnergy=True, getForces=True)
        forces = state.getForces(asNumpy=True).value_in_unit(kj / nm)[free]
        return state.getPotentialEnergy().value_in_unit(kj), -forces.ravel()

    try:
        x = full[free].ravel().copy()
        energy, grad = energy_gradient(x)
        hess = np.empty((x.size, x.size))  # forward differences of the gradient at the start
        for i in range(x.size):
            xp = x.copy()
            xp[i] += HESSIAN_STEP_NM
            hess[:, i] = (energy_gradient(xp)[1] - grad) / HESSIAN_STEP_NM
        w, v = np.linalg.eigh(0.5 * (hess + hess.T))
        t = v / np.sqrt(np.maximum(np.abs(w), PRECONDITION_FLOOR))
        for _ in range(MINIMISE_ROUNDS):
            x0 = x.copy()

            def fun(y, x0=x0):
                e, g = energy_gradient(x0 + t @ y)
                return e, t.T @ g

            res = minimize(fun, np.zeros(x.size), jac=True, method="L-BFGS-B",
                           options={"maxiter": MINIMISE_MAX_ITERATIONS, "gtol": MINIMISE_GTOL, "ftol": 1e-12, "maxcor": 20})  # fmt: skip
            x_new = x0 + t @ res.x
            e_new, _ = energy_gradient(x_new)
            if e_new > energy:  # never accept a round that went uphill (float noise only)
                break
            x, drop, energy = x_new, energy - e_new, e_new
            if drop < MINIMISE_ROUND_DE_KJ_MOL:
                break
        full[free] = x.reshape(-1, 3)
        pos = full.copy()
    finally:
        del ctx
    if not math.isfinite(energy):
        raise SimulationError(f"calibration: minimised energy is {energy} (not finite)")
    return energy, pos


@dataclass
class _Setup:
    model: _Model
    system: openmm.System
    info: dict
    far_xyz: np.ndarray
    bound_nm: float
    platform: str


def _setup(metal: str, ff_cfg: dict, overrides: dict | None, vacuum_nm: float, platform: str) -> _Setup:
    model = _model(metal, float(vacuum_nm))
    ff = _merged_ff(ff_cfg, overrides)
    cutoff = float(ff.get("nonbonded_cutoff_nm", 1.0))
    far_xyz = _far_position(model)
    if _min_distance_to_slab(model, far_xyz) <= cutoff:
        raise ConfigError(f"forcefield.nonbonded_cutoff_nm: {cutoff} reaches the mid-vacuum TFSI; use a larger vacuum")
    system, info = create_system(model.topology, ff, nonbonded_method=app.Ewald)  # deterministic, module doc
    pairs = ff["metal_o_tfsi"]
    sigma = max(float(pairs[el]["sigma_nm"]) if el in pairs else geometric_pair(el)[0] for el in MODEL_METALS[metal])
    return _Setup(model, system, info, far_xyz, bound_distance_nm(sigma), platform)


def _bound_pose(setup: _Setup, tfsi_xyz: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Minimise the TFSI from `tfsi_xyz` next to the rigid slab: (energy, minimised TFSI xyz, O-metal nm)."""
    model = setup.model
    energy, pos = _minimised_energy(setup.system, np.vstack([model.slab_nm, tfsi_xyz]), setup.platform)
    n = model.n_slab
    o_idx = [n + model.tfsi_names.index(name) for name in TFSI_O_NAMES]
    return energy, pos[n:], _min_distance_to_slab(model, pos[o_idx], model.metal_indices)


def _far_energy(setup: _Setup) -> float:
    """Energy with the TFSI minimised in mid-vacuum, its N held (zero mass) so that it stays there."""
    system, model = setup.system, setup.model
    n1 = model.n_slab + model.tfsi_names.index("N1")
    held_mass = system.getParticleMass(n1)
    system.setParticleMass(n1, 0.0)
    try:
        energy, _ = _minimised_energy(system, np.vstack([model.slab_nm, setup.far_xyz]), setup.platform)
    finally:
        system.setParticleMass(n1, held_mass)
    return energy


def adsorption_energy_details(
    metal: str,
    ff_cfg: dict,
    overrides: dict | None = None,
    *,
    vacuum_nm: float = VACUUM_NM,
    n_rotations: int = N_ROTATIONS,
    seeds: list | None = None,
    platform: str = "CPU",
) -> dict:
    """E_ads of one TFSI- on an open metal site of the `metal` model, best of every start (module doc).

    `overrides` {metal: {sigma_nm, epsilon_kj_mol}} replace/extend ff_cfg["metal_o_tfsi"]. The
    minimised TFSI coordinates of the best pose are returned under "best_tfsi_nm" (not JSON).
    """
    if n_rotations < 0 or (n_rotations == 0 and not seeds):
        raise ConfigError(f"n_rotations: {n_rotations!r} is out of range; must be >= 1 (or 0 with seeds)")
    setup = _setup(metal, ff_cfg, overrides, vacuum_nm, platform)
    model = setup.model
    poses, coords = [], []
    systematic = _bound_starts(model, n_rotations) if n_rotations else []
    starts = [(site.metal_index, site.element, label, xyz) for site, label, xyz in systematic]
    for k, seed in enumerate(seeds or []):
        starts.append((None, None, seed.get("label", f"seed{k}"), np.asarray(seed["tfsi_nm"], dtype=float)))
    starts_xyz = []
    for metal_index, element, label, xyz in starts:
        energy, tfsi_xyz, d_metal = _bound_pose(setup, xyz)
        log.debug("calibration %s: start %s -> %.3f kJ/mol, O-metal %.3f nm", metal, label, energy, d_metal)
        coords.append(tfsi_xyz)
        starts_xyz.append(xyz)
        poses.append(
            {
                "label": label,
                "metal_index": metal_index,
                "element": element,
                "energy_kj_mol": energy,
                "o_metal_distance_nm": d_metal,
                "bound": d_metal <= setup.bound_nm,
            }
        )
    bound = [k for k, p in enumerate(poses) if p["bound"]]
    if not bound:
        raise SimulationError(
            f"calibration {metal}: no start stayed on an open metal site (TFSI O within {setup.bound_nm:.3f} nm of a metal)"
        )
    best = min(bound, key=lambda k: poses[k]["energy_kj_mol"])
    e_far = _far_energy(setup)
    e_ads = poses[best]["energy_kj_mol"] - e_far
    return {
        "metal": metal,
        "e_ads_kj_mol": e_ads,
        "e_ads_eV": e_ads / KJ_PER_MOL_PER_EV,
        "e_bound_kj_mol": poses[best]["energy_kj_mol"],
        "e_far_kj_mol": e_far,
        "best_pose": poses[best],
        "best_tfsi_nm": coords[best],
        "best_start_tfsi_nm": starts_xyz[best],
        "tfsi_nm": coords,
        "n_starts": len(starts),
        "poses": poses,
        "bound_nm": setup.bound_nm,
        "metal_o_tfsi": setup.info["metal_o_tfsi"],
        "charge_scale": setup.info["charge_scale"],
        "mof_charge_scale": setup.info["mof_charge_scale"],
        "box_nm": model.box_nm.tolist(),
        "slab_thickness_nm": model.thickness_nm,
        "vacuum_nm": float(vacuum_nm),
        "far_clearance_nm": _min_distance_to_slab(model, setup.far_xyz),
        "n_atoms": setup.system.getNumParticles(),
        "platform": platform,
    }


def adsorption_energy_kj_mol(metal: str, ff_cfg: dict, overrides: dict | None = None, **kwargs) -> float:
    """E_ads (kJ/mol, negative = binding) of one TFSI- on the `metal` model (see module doc)."""
    return adsorption_energy_details(metal, ff_cfg, overrides, **kwargs)["e_ads_kj_mol"]


#: Distance scan (:func:`distance_curve`): restraint force constant (kJ/mol/nm^2) on the binding O - metal distance.
SCAN_K_KJ_MOL_NM2 = 2.0e4


def distance_curve(metal: str, ff_cfg: dict, overrides: dict | None, pose_tfsi_nm, distances_nm, *,
                   vacuum_nm: float = VACUUM_NM, platform: str = "CPU") -> list[dict]:  # fmt: skip
    """E_ads along a restrained scan of the binding O - metal distance (module doc, "Distance curves").

    From the minimised pose `pose_tfsi_nm`, the TFSI O closest to a model metal and that metal are held at
    each distance in turn by a stiff harmonic restraint (SCAN_K_KJ_MOL_NM2), the rest of the anion
    minimised (each distance from the previous one's pose, in the order given); the reported energy is
    the unrestrained energy of that minimum minus E_far. Returns rows {target_nm, distance_nm, e_ads_eV, ...}.
    """
    setup = _setup(metal, ff_cfg, overrides, vacuum_nm, platform)
    model = setup.model
    n = model.n_slab
    pose = np.asarray(pose_tfsi_nm, dtype=float)
    o_names = list(TFSI_O_NAMES)
    o_local = [model.tfsi_names.index(name) for name in o_names]
    d = pose[o_local][:, None, :] - model.slab_nm[model.metal_indices][None, :, :]
    d -= np.round(d / model.box_nm) * model.box_nm
    dist = np.linalg.norm(d, axis=2)
    k_o, k_m = np.unravel_index(np.argmin(dist), dist.shape)
    o_idx, m_idx = n + o_local[k_o], int(model.metal_indices[k_m])
    e_far = _far_energy(setup)
    rows = []
    for r0 in distances_nm:
        system = copy.deepcopy(setup.system)
        bond = openmm.CustomBondForce("0.5*k_scan*(r-r0)^2")
        bond.addGlobalParameter("k_scan", SCAN_K_KJ_MOL_NM2)
        bond.addGlobalParameter("r0", float(r0))
        bond.setUsesPeriodicBoundaryConditions(True)
        bond.addBond(m_idx, o_idx)
        system.addForce(bond)
        energy, pos = _minimised_energy(system, np.vstack([model.slab_nm, pose]), platform)
        v = pos[o_idx] - pos[m_idx]
        v -= np.round(v / model.box_nm) * model.box_nm
        r = float(np.linalg.norm(v))
        e_unrestrained = energy - 0.5 * SCAN_K_KJ_MOL_NM2 * (r - float(r0)) ** 2
        pose = pos[n:]
        rows.append({"target_nm": float(r0), "distance_nm": r, "e_ads_kj_mol": e_unrestrained - e_far,
                     "e_ads_eV": (e_unrestrained - e_far) / KJ_PER_MOL_PER_EV, "o_atom": o_names[k_o], "metal_index": m_idx})  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------
# fit
# ------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _xml_lj() -> dict[str, tuple[float, float]]:
    """(sigma nm, epsilon kJ/mol) per atom type of mof.xml and tfsi.xml, read from the XML."""
    out = {}
    for name in ("mof.xml", "tfsi.xml"):
        for atom in ET.parse(xml_path(name)).getroot().iter("Atom"):
            if atom.get("sigma") is not None:
                out[atom.get("type")] = (float(atom.get("sigma")), float(atom.get("epsilon")))
    return out


def geometric_pair(element: str) -> tuple[float, float]:
    """Geometric-mixing (sigma nm, epsilon kJ/mol) of the metal-O(TFSI) pair (the uncalibrated values)."""
    lj = _xml_lj()
    (s_m, e_m), (s_o, e_o) = lj[METAL_TYPES[element]], lj[TFSI_O_TYPE]
    return math.sqrt(s_m * s_o), math.sqrt(e_m * e_o)


def pair_overrides(
    metal: str, *, sigma_nm: float | None = None, epsilon_kj_mol: float | None = None, c4_kJ_nm4_per_mol: float | None = None
) -> dict:
    """metal_o_tfsi overrides for every metal of the model: the given sigma and/or epsilon, the
    geometric-mixing value of each pair for the one not given."""
    _check_metal(metal)
    out = {}
    for el in MODEL_METALS[metal]:
        sig, eps = geometric_pair(el)
        out[el] = {
            "sigma_nm": float(sig if sigma_nm is None else sigma_nm),
            "epsilon_kj_mol": float(eps if epsilon_kj_mol is None else epsilon_kj_mol),
        }
        if c4_kJ_nm4_per_mol is not None:
            out[el]["c4_kJ_nm4_per_mol"] = float(c4_kJ_nm4_per_mol)
    return out
