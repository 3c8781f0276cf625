"""Is the capped surface's binding of TFSI- away from the open metals physical? Per MOF charge set.

Three measurements on the capped 1x1x1 slab of forcefields/calibration.py (rigid, plain Ewald, one CPU
thread, charge_scale 0.8, geometric metal-O pair), for each forcefield.mof_charges set:

1. ``potential``: the slab's electrostatics from its point charges (forcefields/slab_potential.py): the
   x,y-averaged potential phibar(z) across and outside the slab, the slab's net charge and z dipole, and at
   heights h above the outermost atom centres the lateral spread of phi (min, max, SD), the field |E|
   (RMS, max) and the averaged field. Cross-check: the same potential from OpenMM itself (a +1 e probe
   added to the slab's charges, plain Ewald, 3-D periodic box, tolerance 1e-6) on an 8 x 8 grid at
   h = 0.5 nm, in boxes with 4 and 8 nm of vacuum, differences taken against the mid-vacuum point.
2. ``background``: E_ads with EVERY TFSI O held >= 0.5 nm from EVERY slab metal: a flat-bottomed
   harmonic wall 0.5 k (r_w - r)^2 for r < r_w, r_w = WALL_NM, k = WALL_K, on all O x metal pairs
   (minimum image), the anion otherwise free (calibration._minimised_energy); the reported energy
   excludes the wall. Starts: the trans and cis conformers, N_ORIENT orientations each (fixed seed),
   centred over a 3 x 3 lateral grid of the cell N_HEIGHT_NM above the outermost atoms; starts with a
   TFSI O within START_O_METAL_NM of a metal or any atom within START_CLASH_NM of the slab are dropped,
   then the first --starts are used. Each pose's E_ads is split into host-guest Coulomb and
   Lennard-Jones (the pose against itself moved rigidly to mid-vacuum) and the anion's deformation.
3. ``vacuum``: the lowest background pose (and with --open-site the fitted model's best open-site pose,
   re-minimised with each set from its recorded start) and the reference re-evaluated (single points, and the
   reference re-minimised) in a box with 8 nm of vacuum instead of 4: a 3-D periodic artefact (the net
   -0.8 e anion's images and the uniform neutralising background of Ewald) would change E_ads with box
   height.

    python benchmarks/calibration_background_charges.py --models Ni --skip background vacuum --out DIR  # 1. (~1 min)
    python benchmarks/calibration_background_charges.py --models Ni --starts 108 --skip potential \
        --open-site docs/calibration/Ni.json --out DIR                          # 2. + 3. (~15 min per set)

Prints one line per result; writes DIR/potential.csv, DIR/averaged_potential.csv (phibar(z) across the slab),
DIR/surface_potential.png, DIR/background.csv, DIR/vacuum.csv and the lowest
background pose per model and set, DIR/best_<model>_<set>.npz (TFSI and its reference, nm).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spemd.forcefields import calibration as cal  # noqa: E402
from spemd.forcefields import slab_potential as sp  # noqa: E402
from spemd.forcefields.mof_charges import CHARGE_SETS  # noqa: E402
from spemd.forcefields.parametrise import create_system  # noqa: E402
from spemd.units import KJ_PER_MOL_PER_EV  # noqa: E402

HEIGHTS_NM = (0.25, 0.35, 0.5, 0.75, 1.0)
WALL_NM = 0.51  # a little beyond 0.5 nm so that the wall's give (~F/k) still leaves every O >= 0.5 nm out
WALL_K = 5.0e4  # kJ/mol/nm^2
N_ORIENT = 6
N_HEIGHT_NM = 0.30
START_O_METAL_NM = 0.55
START_CLASH_NM = 0.25
SEED = 2026
METAL_ELEMENTS = ("Fe", "Ni", "Cu")


def _ff(charge_set: str) -> dict:
    return {"charge_scale": 0.8, "mof_charge_scale": 1.0, "mof_charges": charge_set}


def _slab_charges(metal: str, charge_set: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    model = cal._model(metal, cal.VACUUM_NM)
    system, _ = create_system(model.topology, _ff(charge_set), nonbonded_method=app.Ewald)
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    q = np.array([nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(model.n_slab)])
    return q, model.slab_nm, (float(model.box_nm[0]), float(model.box_nm[1]))


def _probe_potential(q, xyz, box_xy, vacuum_nm, points) -> np.ndarray:
    """phi (kJ/mol/e) at `points` from OpenMM: +1 e probe with the slab's charges, plain 3-D Ewald."""
    top_z = xyz[:, 2].max()
    box = np.array([box_xy[0], box_xy[1], top_z + vacuum_nm])
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.diag(box)])
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.Ewald)
    nb.setCutoffDistance(1.0)
    nb.setEwaldErrorTolerance(1e-6)
    for qi in q:
        system.addParticle(0.0)
        nb.addParticle(float(qi), 0.1, 0.0)
    system.addParticle(1.0)
    nb.addParticle(1.0, 0.1, 0.0)
    system.addForce(nb)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    out = []
    for p in points:
        ctx.setPositions(np.vstack([xyz, p]) * u.nanometer)
        out.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
    return np.array(out)


def averaged_profile(metal: str, charge_set: str) -> list[dict]:
    """phibar(z) every 0.02 nm from 1 nm below the slab's lowest atom to 2 nm above its outermost one."""
    q, xyz, box_xy = _slab_charges(metal, charge_set)
    z = np.arange(xyz[:, 2].min() - 1.0, xyz[:, 2].max() + 2.0 + 1e-9, 0.02)
    phi = sp.averaged_potential(z, q, xyz, box_xy) / KJ_PER_MOL_PER_EV
    top = float(xyz[:, 2].max())
    return [{"mof_charges": charge_set, "z_minus_top_nm": float(zi - top), "phibar_V": float(v)} for zi, v in zip(z, phi)]


def plot(pot: list[dict], prof: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for charge_set in dict.fromkeys(r["mof_charges"] for r in prof):
        rows = [r for r in prof if r["mof_charges"] == charge_set]
        a.plot([r["z_minus_top_nm"] for r in rows], [r["phibar_V"] for r in rows], label=charge_set)
        rows = [r for r in pot if r["mof_charges"] == charge_set]
        h = [r["h_nm"] for r in rows]
        line, = b.plot(h, [r["phi_max_V"] for r in rows], "o-", label=f"{charge_set}: max, min of phi")
        b.plot(h, [r["phi_min_V"] for r in rows], "o-", color=line.get_color())
        b.plot(h, [r["E_rms_V_per_nm"] for r in rows], "s--", color=line.get_color(), label=f"{charge_set}: RMS |E| (V/nm)")
    a.axvline(0.0, color="grey", lw=0.5)
    a.set_xlabel("z - outermost atom (nm)")
    a.set_ylabel("x,y-averaged potential (V)")
    a.legend(fontsize=7)
    b.axhline(0.0, color="grey", lw=0.5)
    b.set_xlabel("height above the outermost atom (nm)")
    b.set_ylabel("phi (V); |E| (V/nm)")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def potential(metal: str, charge_set: str) -> list[dict]:
    q, xyz, box_xy = _slab_charges(metal, charge_set)
    top = float(xyz[:, 2].max())
    m_z = float((q * (xyz[:, 2] - xyz[:, 2].mean())).sum())
    far = sp.averaged_potential([top + 2.0, -2.0], q, xyz, box_xy) / KJ_PER_MOL_PER_EV
    print(f"{metal} {charge_set}: net {q.sum():+.2e} e, z dipole {m_z:+.2e} e nm per cell, "
          f"phibar above / below {far[0]:+.2e} / {far[1]:+.2e} V", flush=True)  # fmt: skip
    rows = []
    for h in HEIGHTS_NM:
        g = sp.potential_grid(top + h, q, xyz, box_xy, n_grid=128)
        phi_v = g["phi"] / KJ_PER_MOL_PER_EV
        e_v = np.linalg.norm(g["field"], axis=0) / KJ_PER_MOL_PER_EV
        row = {"metal": metal, "mof_charges": charge_set, "h_nm": h, "phibar_V": g["phibar"] / KJ_PER_MOL_PER_EV,
               "phi_min_V": phi_v.min(), "phi_max_V": phi_v.max(), "phi_sd_V": phi_v.std(),
               "E_rms_V_per_nm": float(np.sqrt((e_v**2).mean())), "E_max_V_per_nm": e_v.max(),
               "Ez_mean_V_per_nm": float(g["field"][2].mean()) / KJ_PER_MOL_PER_EV}  # fmt: skip
        rows.append(row)
        print(f"  h {h:.2f} nm: phibar {row['phibar_V']:+.2e} V, phi {row['phi_min_V']:+.3f} .. {row['phi_max_V']:+.3f} V "
              f"(SD {row['phi_sd_V']:.3f}), |E| RMS {row['E_rms_V_per_nm']:.3f} max {row['E_max_V_per_nm']:.3f} V/nm, "
              f"<E_z> {row['Ez_mean_V_per_nm']:+.1e} V/nm", flush=True)  # fmt: skip
    # OpenMM's 3-D Ewald potential at h = 0.5 nm against this 2-D sum, in 4 and 8 nm of vacuum
    g = sp.potential_grid(top + 0.5, q, xyz, box_xy, n_grid=64)
    idx = [(i, k) for i in range(0, 64, 8) for k in range(0, 64, 8)]
    pts = [np.array([g["x_nm"][i], g["y_nm"][k], top + 0.5]) for i, k in idx]
    ours = np.array([g["phi"][i, k] for i, k in idx])
    for vac in (4.0, 8.0):
        ref = np.array([box_xy[0] / 2, box_xy[1] / 2, top + vac / 2])
        e = _probe_potential(q, xyz, box_xy, vac, [ref] + pts)
        ours_ref = sp.potential_grid(ref[2], q, xyz, box_xy, n_grid=64)["phibar"]  # mid-vacuum: flat to 1e-10
        dev = (e[1:] - e[0]) - (ours - ours_ref)
        print(f"  OpenMM 3-D Ewald, {vac:.0f} nm vacuum, 64 points at h 0.5 nm: max |phi_Ewald - phi_2D| "
              f"{np.abs(dev).max() / KJ_PER_MOL_PER_EV * 1000:.3f} mV (phi spread {np.ptp(ours) / KJ_PER_MOL_PER_EV:.3f} V)", flush=True)  # fmt: skip
        rows[HEIGHTS_NM.index(0.5)][f"ewald_dev_{vac:.0f}nm_mV"] = float(np.abs(dev).max() / KJ_PER_MOL_PER_EV * 1000)
    return rows


def _random_rotation(rng) -> np.ndarray:
    qv = rng.normal(size=4)
    a, b, c, d = qv / np.linalg.norm(qv)
    return np.array([[a*a+b*b-c*c-d*d, 2*(b*c-a*d), 2*(b*d+a*c)],
                     [2*(b*c+a*d), a*a-b*b+c*c-d*d, 2*(c*d-a*b)],
                     [2*(b*d-a*c), 2*(c*d+a*b), a*a-b*b-c*c+d*d]])  # fmt: skip


def _metal_indices(model) -> np.ndarray:
    return np.array([a.index for a in model.topology.atoms() if a.index < model.n_slab and a.element.symbol in METAL_ELEMENTS])


def _o_local(model) -> list[int]:
    return [model.tfsi_names.index(n) for n in cal.TFSI_O_NAMES]


def background_starts(model, n: int) -> list[np.ndarray]:
    """The documented start set (module doc), first n."""
    rng = np.random.default_rng(SEED)
    rotations = [_random_rotation(rng) for _ in range(N_ORIENT)]
    metals = _metal_indices(model)
    top = model.slab_nm[:, 2].max()
    starts = []
    for conf in cal.CONFORMERS:
        x = cal._conformer(model, conf)
        x = x - x.mean(axis=0)
        for fx in (1 / 6, 1 / 2, 5 / 6):
            for fy in (1 / 6, 1 / 2, 5 / 6):
                for rot in rotations:
                    xyz = x @ rot.T
                    xyz += [fx * model.box_nm[0], fy * model.box_nm[1], top + N_HEIGHT_NM - xyz[:, 2].min()]
                    if cal._min_distance_to_slab(model, xyz[_o_local(model)], metals) < START_O_METAL_NM:
                        continue
                    if cal._min_distance_to_slab(model, xyz) < START_CLASH_NM:
                        continue
                    starts.append(xyz)
    # interleave the conformers and lateral positions so that the first n spread over both
    order = sorted(range(len(starts)), key=lambda k: (k % N_ORIENT, k))
    return [starts[k] for k in order][:n]


def _walled(setup) -> openmm.System:
    model = setup.model
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(setup.system))
    wall = openmm.CustomBondForce("step(r_w - r) * 0.5 * k_w * (r_w - r)^2")
    wall.addGlobalParameter("r_w", WALL_NM)
    wall.addGlobalParameter("k_w", WALL_K)
    wall.setUsesPeriodicBoundaryConditions(True)
    wall.setForceGroup(31)
    for o in _o_local(model):
        for m in _metal_indices(model):
            wall.addBond(int(m), model.n_slab + o)
    system.addForce(wall)
    return system


def _components(system, xyz) -> dict:
    """Energy (kJ/mol) without the wall (group 31), and its NonbondedForce (Coulomb) and LJ parts."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    names = {}
    for k, f in enumerate(system.getForces()):
        if f.getForceGroup() != 31:
            f.setForceGroup(k % 30)
            names[k % 30] = f.getName() if isinstance(f, openmm.CustomNonbondedForce) else type(f).__name__
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    ctx.setPositions(xyz * u.nanometer)
    out = {"total": 0.0}
    for g, name in names.items():
        e = ctx.getState(getEnergy=True, groups={g}).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        out[name] = out.get(name, 0.0) + e
        out["total"] += e
    return out


def _split(system, slab_nm, pose, far_nm, e_far) -> dict:
    """E_ads of `pose` (eV) split into host-guest Coulomb and Lennard-Jones (the pose against the same
    pose moved rigidly to the reference's centre in mid-vacuum) and the anion's deformation (that moved
    pose against the minimised reference, e_far kJ/mol)."""
    parts = _components(system, np.vstack([slab_nm, pose]))
    iso = _components(system, np.vstack([slab_nm, pose + (far_nm.mean(axis=0) - pose.mean(axis=0))]))
    lj = [k for k in parts if k.startswith("LJ")]
    return {"e_ads_eV": (parts["total"] - e_far) / KJ_PER_MOL_PER_EV,
            "coulomb_eV": (parts["NonbondedForce"] - iso["NonbondedForce"]) / KJ_PER_MOL_PER_EV,
            "lj_eV": sum(parts[k] - iso[k] for k in lj) / KJ_PER_MOL_PER_EV,
            "deformation_eV": (iso["total"] - e_far) / KJ_PER_MOL_PER_EV}  # fmt: skip


def _far(setup) -> tuple[float, np.ndarray]:
    """Reference: TFSI minimised in mid-vacuum, N held (calibration._far_energy, keeping the pose)."""
    system, model = setup.system, setup.model
    n1 = model.n_slab + model.tfsi_names.index("N1")
    mass = system.getParticleMass(n1)
    system.setParticleMass(n1, 0.0)
    try:
        return cal._minimised_energy(system, np.vstack([model.slab_nm, setup.far_xyz]), setup.platform)
    finally:
        system.setParticleMass(n1, mass)


def background(metal: str, charge_set: str, n_starts: int) -> tuple[list[dict], dict]:
    t0 = time.perf_counter()
    setup = cal._setup(metal, _ff(charge_set), None, cal.VACUUM_NM, "CPU")
    model = setup.model
    walled = _walled(setup)
    e_far, far_pos = _far(setup)
    metals = _metal_indices(model)
    rows, best = [], None
    for k, start in enumerate(background_starts(model, n_starts)):
        t1 = time.perf_counter()
        _, pos = cal._minimised_energy(walled, np.vstack([model.slab_nm, start]), "CPU")
        split = _split(setup.system, model.slab_nm, pos[model.n_slab:], far_pos[model.n_slab:], e_far)
        d_min = cal._min_distance_to_slab(model, pos[model.n_slab:][_o_local(model)], metals)
        e_ads = split["e_ads_eV"]
        row = {"metal": metal, "mof_charges": charge_set, "start": k, **split,
               "min_o_metal_nm": d_min, "n_height_nm": float(pos[model.n_slab + model.tfsi_names.index("N1"), 2] - model.slab_nm[:, 2].max()),
               "seconds": time.perf_counter() - t1}  # fmt: skip
        rows.append(row)
        if best is None or e_ads < best[0]["e_ads_eV"]:
            best = (row, pos)
        print(f"  {metal} {charge_set} start {k:2d}: E_ads {e_ads:+.4f} eV (Coulomb {row['coulomb_eV']:+.4f}, "
              f"LJ {row['lj_eV']:+.4f}, deformation {row['deformation_eV']:+.4f}), min O-metal {d_min:.3f} nm, N {row['n_height_nm']:+.3f} nm above the outermost atom, {row['seconds']:.0f} s", flush=True)  # fmt: skip
    print(f"{metal} {charge_set}: background {best[0]['e_ads_eV']:+.4f} eV (best of {len(rows)} starts; "
          f"Coulomb {best[0]['coulomb_eV']:+.4f}, LJ {best[0]['lj_eV']:+.4f}, deformation {best[0]['deformation_eV']:+.4f}); {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    return rows, {"pose": best[1][model.n_slab:], "far": far_pos[model.n_slab:], "e_ads_eV": best[0]["e_ads_eV"], "start": best[0]["start"]}


def vacuum_test(metal: str, charge_set: str, best: dict) -> list[dict]:
    """E_ads of the best background pose in 4 and 8 nm of vacuum (module doc)."""
    rows = []
    for vac in (4.0, 8.0):
        setup = cal._setup(metal, _ff(charge_set), None, vac, "CPU")
        model = setup.model
        shift = np.array([0.0, 0.0, setup.far_xyz[:, 2].mean() - best["far"][:, 2].mean()])
        e_pose = _components(setup.system, np.vstack([model.slab_nm, best["pose"]]))["total"]
        e_far_fixed = _components(setup.system, np.vstack([model.slab_nm, best["far"] + shift]))["total"]
        e_far_min, _ = _far(setup)
        row = {"metal": metal, "mof_charges": charge_set, "pose": "background", "vacuum_nm": vac, "box_z_nm": float(model.box_nm[2]),
               "e_pose_kj_mol": e_pose, "e_far_kj_mol": e_far_fixed,
               "e_ads_fixed_eV": (e_pose - e_far_fixed) / KJ_PER_MOL_PER_EV,
               "e_ads_far_reminimised_eV": (e_pose - e_far_min) / KJ_PER_MOL_PER_EV}  # fmt: skip
        rows.append(row)
        print(f"  {metal} {charge_set} vacuum {vac:.0f} nm (box z {row['box_z_nm']:.3f}): E(pose) {e_pose:.3f}, "
              f"E(far) {e_far_fixed:.3f} kJ/mol; E_ads fixed poses {row['e_ads_fixed_eV']:+.5f} eV, "
              f"far re-minimised {row['e_ads_far_reminimised_eV']:+.5f} eV", flush=True)  # fmt: skip
    return rows


def open_site(record_path: Path, charge_set: str) -> list[dict]:
    """The fitted model's best open-site pose (its calibration JSON: fitted pair, best start) minimised
    with `charge_set`, then E_ads of that fixed pose in 4 and 8 nm of vacuum (module doc, 4.)."""
    import json

    rec = json.loads(record_path.read_text())
    metal, pair = rec["metal"], rec["fitted"]
    setup = cal._setup(metal, _ff(charge_set), pair, cal.VACUUM_NM, "CPU")
    _, pos = cal._minimised_energy(setup.system, np.vstack([setup.model.slab_nm, rec["best_start_tfsi_nm"]]), "CPU")
    _, far = _far(setup)
    pose = {"pose": pos[setup.model.n_slab:], "far": far[setup.model.n_slab:]}
    d = cal._min_distance_to_slab(setup.model, pos[setup.model.n_slab:][_o_local(setup.model)], setup.model.metal_indices)
    print(f"{metal} {charge_set}: open-site pose from {rec['best_pose']['label']} at the fitted pair, O-{metal} {d:.3f} nm", flush=True)
    rows = []
    for vac in (4.0, 8.0):
        s = cal._setup(metal, _ff(charge_set), pair, vac, "CPU")
        shift = np.array([0.0, 0.0, s.far_xyz[:, 2].mean() - pose["far"][:, 2].mean()])
        e_pose = _components(s.system, np.vstack([s.model.slab_nm, pose["pose"]]))["total"]
        e_far = _components(s.system, np.vstack([s.model.slab_nm, pose["far"] + shift]))["total"]
        e_far_min, _ = _far(s)
        split = _split(s.system, s.model.slab_nm, pose["pose"], pose["far"] + shift, e_far)
        row = {"metal": metal, "mof_charges": charge_set, "pose": "open site (fitted pair)", "vacuum_nm": vac,
               "box_z_nm": float(s.model.box_nm[2]), "e_pose_kj_mol": e_pose, "e_far_kj_mol": e_far, "o_metal_nm": d,
               "e_ads_fixed_eV": (e_pose - e_far) / KJ_PER_MOL_PER_EV,
               "e_ads_far_reminimised_eV": (e_pose - e_far_min) / KJ_PER_MOL_PER_EV,
               **{k: v for k, v in split.items() if k != "e_ads_eV"}}  # fmt: skip
        rows.append(row)
        print(f"  vacuum {vac:.0f} nm: E(pose) {e_pose:.3f}, E(far) {e_far:.3f} kJ/mol; E_ads fixed poses {row['e_ads_fixed_eV']:+.5f} eV "
              f"(Coulomb {row['coulomb_eV']:+.4f}, LJ {row['lj_eV']:+.4f}, deformation {row['deformation_eV']:+.4f}), "
              f"far re-minimised {row['e_ads_far_reminimised_eV']:+.5f} eV", flush=True)  # fmt: skip
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["Ni"], choices=["Fe", "Ni", "Cu"])
    ap.add_argument("--sets", nargs="+", default=list(CHARGE_SETS), choices=list(CHARGE_SETS))
    ap.add_argument("--starts", type=int, default=24, help="background starts per model and set (module doc)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["potential", "background", "vacuum"])
    ap.add_argument("--open-site", type=Path, help="a calibration JSON (e.g. docs/calibration/Ni.json): its open-site pose per set, 4 vs 8 nm vacuum")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pot, prof, bg, vac = [], [], [], []
    if args.open_site:
        for charge_set in args.sets:
            vac += open_site(args.open_site, charge_set)
            _write(out / "vacuum.csv", vac)
    for charge_set in args.sets:
        if "potential" not in args.skip:
            pot += potential(args.models[0], charge_set)  # the charges do not depend on the metal (Cu proxy)
            prof += averaged_profile(args.models[0], charge_set)
            _write(out / "potential.csv", pot)
            _write(out / "averaged_potential.csv", prof)
            plot(pot, prof, out / "surface_potential.png")
    for metal in args.models:
        for charge_set in args.sets:
            if "background" in args.skip:
                continue
            rows, best = background(metal, charge_set, args.starts)
            np.savez(out / f"best_{metal}_{charge_set}.npz", tfsi_nm=best["pose"], far_tfsi_nm=best["far"], start=best["start"])
            bg += rows
            _write(out / "background.csv", bg)
            if "vacuum" not in args.skip:
                vac += vacuum_test(metal, charge_set, best)
                _write(out / "vacuum.csv", vac)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
