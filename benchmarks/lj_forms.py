"""ms/step of three Lennard-Jones forms on the default config's two boxes, side by side, one process.

  project   - the System of forcefields/parametrise.create_system: per-particle product form
              a1*a2/r^12 - b1*b2/r^6 ('LJGeometric', no MOF-MOF pairs for the rigid MOF) plus the
              metal-O(TFSI) correction force 'LJPairOverrides' when pair terms are configured
  tables    - the named baseline, the form the project used before: one CustomNonbondedForce
              acoef(type1,type2)/r^12 - bcoef(type1,type2)/r^6 over per-type Discrete2DFunction tables,
              every pair (MOF-MOF included); built here from the same parameters (table_form below)
  nb_lb     - reference: LJ inside OpenMM's NonbondedForce (Lorentz-Berthelot, so NOT the same
              physics; the speed OpenMM's own kernel reaches), dispersion correction on

The boxes are built and parametrised with the project's own functions (systems.build.build_box,
forcefields.parametrise.create_system) from config/config.yaml into a temporary folder, minimised
briefly with the project System, and then every form runs LangevinMiddle (4 fs, 353 K) from the
same positions. Correctness check, printed: energy of project vs tables with the MOF-MOF pairs put
back (same pairs, same long-range correction) agrees to 1e-3 kJ/mol, and the forces on the mobile
atoms of the project System itself agree with the tables to 1e-3 relative.

Where the project's time goes (CPU only, printed per box): forces-only evaluation at fixed positions
(no neighbour-list rebuild) of one force group at a time: the project's LJGeometric force, the same
pairs with the cheapest possible CustomNonbondedForce (energy 'r', no per-particle parameters, no
long-range correction: the per-pair cost floor of OpenMM's CPU CustomNonbondedForce), and the
reference's whole NonbondedForce (PME Coulomb + LB LJ). 'floor bound' is project/nb_lb with
LJGeometric replaced by that floor: the best ratio any exact-geometric CustomNonbondedForce can reach.

What was tried against the gap to nb_lb (OpenMM 8.6.1, 2-core CPU, 1 thread; benchmarks/results/):
  * expression form: a1*a2/r^12 - b1*b2/r^6, (a1*a2*ir6 - b1*b2)*ir6 with ir6 = 1/r^6, = ir2^3 or
    = 1/(r2^3): all within noise (9.1-9.7 ms kernel, PEO); even 'r' with no parameters costs 8.9 ms
    against 9.6 ms for LJGeometric, so the kernel time is OpenMM's per-pair overhead (shared padded
    neighbour list, ~290k pairs for PEO), not the arithmetic;
  * long-range correction off, CMMotionRemover off, the pair-correction force off: within noise
    (ms/step 14.7 / 14.5 / 15.2 vs 14.5). The CPU platform computes the LRC coefficient once per
    Context (again only when a global parameter changes), not per barostat move;
  * LJ inside NonbondedForce: exact only where sigma_i = sigma_j (LB == geometric); a sum of
    NonbondedForces cannot give a1*a2/r^12 - b1*b2/r^6 for unequal sigmas (each adds a rank-one
    c_i*c_j term per power with one sigma per particle), and any correction for the other pairs is
    again a CustomNonbondedForce over all pairs (same floor). AmoebaVdwForce (geometric, LJ) runs
    on the Reference kernel on CPU: 18.4 ms for the same pairs, slower;
  * skipping MOF-MOF pairs: interaction groups enumerate every listed pair without a neighbour list
    (61.9 ms/step), exclusions must also be NonbondedForce exceptions (128.7 ms/step).

    python benchmarks/lj_forms.py --platform CPU --threads 1 --steps 200 [--npt] [--cache DIR] [--out lj_forms.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spemd.config import load_config  # noqa: E402
from spemd.forcefields.parametrise import METAL_TYPES, TFSI_O_TYPE, create_system  # noqa: E402
from spemd.systems.build import build_box  # noqa: E402

TEMPERATURE_K = 353.0
TIMESTEP_FS = 2.0  # not the production 4 fs: raw packed boxes after 0.2 ps relaxation occasionally blow up at 4 fs; ms/step barely depends on it
BAROSTAT_INTERVAL = 25
LJ_NAMES = ("LJGeometric", "LJPairOverrides")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def _without_lj(system: openmm.System) -> openmm.System:
    out = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for k in reversed(range(out.getNumForces())):
        if out.getForce(k).getName() in LJ_NAMES:
            out.removeForce(k)
    return out


def _nb(system):
    return next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))


def table_form(system: openmm.System, info: dict, ff_cfg: dict, groups=None) -> openmm.System:
    """The former LJ form (baseline): per-type A/B tables, geometric mixing, metal_o_tfsi entries."""
    names = info["atom_types"]
    sig, eps = info["type_sigma_nm"], info["type_epsilon_kj_mol"]
    n = len(names)
    a = np.zeros((n, n))
    b = np.zeros((n, n))
    for i, ti in enumerate(names):
        for j, tj in enumerate(names):
            s, e = math.sqrt(sig[ti] * sig[tj]), math.sqrt(eps[ti] * eps[tj])
            a[i, j], b[i, j] = 4 * e * s**12, 4 * e * s**6
    for metal, pair in (ff_cfg.get("metal_o_tfsi") or {}).items():
        if METAL_TYPES[metal] in names and TFSI_O_TYPE in names:
            i, j = names.index(METAL_TYPES[metal]), names.index(TFSI_O_TYPE)
            s, e = pair["sigma_nm"], pair["epsilon_kj_mol"]
            a[i, j] = a[j, i] = 4 * e * s**12
            b[i, j] = b[j, i] = 4 * e * s**6
    out = _without_lj(system)
    nb = _nb(out)
    f = openmm.CustomNonbondedForce("acoef(type1, type2)/r^12 - bcoef(type1, type2)/r^6")
    f.setName("LJTables")
    # Discrete2DFunction values are indexed x + n*y; the tables are symmetric
    f.addTabulatedFunction("acoef", openmm.Discrete2DFunction(n, n, a.T.ravel().tolist()))
    f.addTabulatedFunction("bcoef", openmm.Discrete2DFunction(n, n, b.T.ravel().tolist()))
    f.addPerParticleParameter("type")
    index = {t: k for k, t in enumerate(names)}
    for t in info["particle_types"]:
        f.addParticle([float(index[t])])
    f.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    f.setCutoffDistance(nb.getCutoffDistance())
    f.setUseLongRangeCorrection(True)
    for k in range(nb.getNumExceptions()):
        i, j, *_ = nb.getExceptionParameters(k)
        f.addExclusion(i, j)
    for s1, s2 in groups or ():
        f.addInteractionGroup(s1, s2)
    out.addForce(f)
    return out


def nb_lb_form(system: openmm.System, info: dict) -> openmm.System:
    """Reference: LJ in NonbondedForce (Lorentz-Berthelot), dispersion correction on."""
    out = _without_lj(system)
    nb = _nb(out)
    for i, t in enumerate(info["particle_types"]):
        q, _, _ = nb.getParticleParameters(i)
        nb.setParticleParameters(i, q, info["type_sigma_nm"][t], info["type_epsilon_kj_mol"][t])
    nb.setUseDispersionCorrection(True)
    return out


def with_mof_pairs(system: openmm.System) -> openmm.System:
    """The project System with LJGeometric's interaction groups removed (MOF-MOF pairs put back)."""
    out = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    k = next(k for k in range(out.getNumForces()) if out.getForce(k).getName() == "LJGeometric")
    old = out.getForce(k)
    new = openmm.CustomNonbondedForce(old.getEnergyFunction())
    new.setName(old.getName())
    for p in range(old.getNumPerParticleParameters()):
        new.addPerParticleParameter(old.getPerParticleParameterName(p))
    for i in range(old.getNumParticles()):
        new.addParticle(old.getParticleParameters(i))
    for x in range(old.getNumExclusions()):
        new.addExclusion(*old.getExclusionParticles(x))
    new.setNonbondedMethod(old.getNonbondedMethod())
    new.setCutoffDistance(old.getCutoffDistance())
    new.setUseLongRangeCorrection(old.getUseLongRangeCorrection())
    out.removeForce(k)
    out.addForce(new)
    return out


def _context(system, xyz, box, platform, props, npt):
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    if npt:
        system.addForce(openmm.MonteCarloBarostat(1.0 * u.bar, TEMPERATURE_K * u.kelvin, BAROSTAT_INTERVAL))
    integ = openmm.LangevinMiddleIntegrator(TEMPERATURE_K * u.kelvin, 1.0 / u.picosecond, TIMESTEP_FS * u.femtosecond)
    integ.setRandomNumberSeed(7)
    ctx = openmm.Context(system, integ, platform, props)
    ctx.setPeriodicBoxVectors(*box)
    ctx.setPositions(xyz)
    ctx.setVelocitiesToTemperature(TEMPERATURE_K * u.kelvin, 11)
    return ctx, integ


def energy_forces(system, xyz, box, platform, props):
    ctx, _ = _context(system, xyz, box, platform, props, False)
    st = ctx.getState(getEnergy=True, getForces=True)
    return st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole), st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)


def ms_per_step(forms: dict, xyz, box, platform, props, steps, npt, repeats=3) -> dict:
    """ms/step of every System in `forms`, median of `repeats` rounds that visit the forms in turn.

    Interleaved (tables, project, nb_lb, tables, ...) so that a change in the load of a shared machine
    hits all forms alike; CPU: process time of this process (all its threads), which other jobs do not
    inflate as much as wall time; GPU: wall time (the host thread mostly waits).
    """
    clock = time.process_time if platform.getName() == "CPU" else time.perf_counter
    ctxs = {}
    for key, system in forms.items():
        ctx, integ = _context(system, xyz, box, platform, props, npt)
        integ.step(10)  # warm-up: neighbour lists, caches, kernel compilation
        ctx.getState(getEnergy=True)
        ctxs[key] = (ctx, integ)
    times = {key: [] for key in forms}
    for _ in range(repeats):
        for key, (ctx, integ) in ctxs.items():
            t0 = clock()
            integ.step(steps)
            ctx.getState(getPositions=True)  # waits for a GPU to finish
            times[key].append((clock() - t0) / steps * 1e3)
    return {key: statistics.median(v) for key, v in times.items()}


def kernel_ms(system, info, xyz, box, platform, props, n=30, repeats=5) -> dict:
    """Forces-only ms per evaluation of single force groups at fixed positions (module doc)."""
    s = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for f in s.getForces():
        f.setForceGroup(0)
    lj = next(f for f in s.getForces() if f.getName() == "LJGeometric")
    lj.setForceGroup(1)
    floor = openmm.CustomNonbondedForce("r")
    for _ in range(lj.getNumParticles()):
        floor.addParticle([])
    for x in range(lj.getNumExclusions()):
        floor.addExclusion(*lj.getExclusionParticles(x))
    floor.setNonbondedMethod(lj.getNonbondedMethod())
    floor.setCutoffDistance(lj.getCutoffDistance())
    floor.setForceGroup(2)
    s.addForce(floor)
    ref = nb_lb_form(system, info)
    for f in ref.getForces():
        f.setForceGroup(1 if isinstance(f, openmm.NonbondedForce) else 0)
    ctxs = {}
    for key, sys_ in (("project", s), ("ref", ref)):
        ctx = openmm.Context(sys_, openmm.VerletIntegrator(0.001), platform, props)
        ctx.setPeriodicBoxVectors(*box)
        ctx.setPositions(xyz)
        ctx.getState(getForces=True)
        ctxs[key] = ctx
    jobs = {"lj_geometric": ("project", 1 << 1), "custom_floor": ("project", 1 << 2), "nb_lb_nonbonded": ("ref", 1 << 1),
            "getstate_overhead": ("project", 1 << 3)}  # an empty group: the cost of the call itself
    times = {k: [] for k in jobs}
    clock = time.process_time if platform.getName() == "CPU" else time.perf_counter
    for _ in range(repeats):
        for k, (c, groups) in jobs.items():
            t0 = clock()
            for _ in range(n):
                ctxs[c].getState(getForces=True, groups=groups)
            times[k].append((clock() - t0) / n * 1e3)
    over = statistics.median(times.pop("getstate_overhead"))
    return {k: max(0.0, statistics.median(v) - over) for k, v in times.items()}


def prepare(name: str, cfg: dict, work: Path, platform, props):
    out = work / name
    build_box(name, cfg["systems"][name], cfg.get("build", {}), seed=cfg["seed"], out_dir=out, cutoff_nm=cfg["forcefield"]["nonbonded_cutoff_nm"])
    pdb = app.PDBFile(str(out / "box.pdb"))
    xyz = pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    system, info = create_system(pdb.topology, cfg["forcefield"], xyz)
    # minimise, then 0.2 ps at 1 fs so that the timed 4 fs runs start from a relaxed, stable state
    integ = openmm.LangevinMiddleIntegrator(TEMPERATURE_K * u.kelvin, 1.0 / u.picosecond, 1.0 * u.femtosecond)
    integ.setRandomNumberSeed(3)
    ctx = openmm.Context(system, integ, platform, props)
    ctx.setPeriodicBoxVectors(*pdb.topology.getPeriodicBoxVectors())
    ctx.setPositions(xyz)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 500)
    ctx.setVelocitiesToTemperature(TEMPERATURE_K * u.kelvin, 5)
    integ.step(200)
    st = ctx.getState(getPositions=True)
    return system, info, st.getPositions(asNumpy=True), st.getPeriodicBoxVectors()


def prepare_cached(name, cfg, cache, work, platform, props):
    """prepare(), or its result from `cache` (written there the first time)."""
    if cache is None:
        return prepare(name, cfg, work, platform, props)
    xml, pkl = cache / f"{name}.xml", cache / f"{name}.pkl"
    if not (xml.is_file() and pkl.is_file()):
        cache.mkdir(parents=True, exist_ok=True)
        system, info, xyz, box = prepare(name, cfg, work, platform, props)
        xml.write_text(openmm.XmlSerializer.serialize(system))
        with open(pkl, "wb") as fh:
            pickle.dump({"info": info, "xyz": xyz.value_in_unit(u.nanometer),
                         "box": [v.value_in_unit(u.nanometer) for v in box]}, fh)
    with open(pkl, "rb") as fh:
        d = pickle.load(fh)
    return openmm.XmlSerializer.deserialize(xml.read_text()), d["info"], d["xyz"] * u.nanometer, [v * u.nanometer for v in d["box"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--systems", nargs="+", default=None, help="system names of the config (default: all)")
    ap.add_argument("--platform", default="CPU", choices=["CPU", "CUDA", "OpenCL", "Reference"])
    ap.add_argument("--threads", type=int, default=1, help="CPU threads")
    ap.add_argument("--precision", default="mixed", choices=["mixed", "single", "double"])
    ap.add_argument("--steps", type=int, default=200, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    ap.add_argument("--npt", action="store_true", help=f"add a MonteCarloBarostat (every {BAROSTAT_INTERVAL} steps)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--cache", default=None, help="folder to keep the built, relaxed boxes in between runs "
                    "(same files as benchmarks/md_threads.py --cache)")
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    ff_cfg = cfg["forcefield"]
    platform = openmm.Platform.getPlatformByName(args.platform)
    props = {"Threads": str(args.threads)} if args.platform == "CPU" else {}
    if args.platform in ("CUDA", "OpenCL"):
        props = {"Precision": args.precision}
    check_props = {"Threads": "1"} if args.platform == "CPU" else props
    results = {"platform": args.platform, "properties": props, "openmm": openmm.__version__, "npt": args.npt,
               "cpus": os.cpu_count(), "cpu_model": _cpu_model(), "load_average_at_start": os.getloadavg()[0],
               "timestep_fs": TIMESTEP_FS, "systems": {}}
    print(f"{os.cpu_count()} CPUs ({results['cpu_model']}), load average {os.getloadavg()[0]:.2f} at start")
    print(f"OpenMM {openmm.__version__} on {args.platform} {props}, {'NPT' if args.npt else 'NVT'}, {TIMESTEP_FS} fs, "
          f"ms/step = median of {args.repeats} interleaved x {args.steps} steps ({'process CPU time' if args.platform == 'CPU' else 'wall time'})")
    print(f"{'system':8} {'atoms':>6} {'tables':>9} {'project':>9} {'nb_lb':>9} {'tables/project':>15} {'project/nb_lb':>14}  check")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.systems or list(cfg["systems"]):
            system, info, xyz, box = prepare_cached(name, cfg, Path(args.cache) if args.cache else None, Path(tmp), platform, check_props)
            tables = table_form(system, info, ff_cfg)
            ref = nb_lb_form(system, info)
            # correctness: same pairs -> same energy; project System -> same forces on mobile atoms
            e_full, _ = energy_forces(with_mof_pairs(system), xyz, box, platform, check_props)
            e_tab, f_tab = energy_forces(tables, xyz, box, platform, check_props)
            _, f_proj = energy_forces(system, xyz, box, platform, check_props)
            mobile = np.ones(system.getNumParticles(), bool)
            mobile[info["mof_atom_indices"]] = False
            df = np.abs(f_proj[mobile] - f_tab[mobile]).max() / np.abs(f_tab[mobile]).max()
            de = e_full - e_tab
            ms = ms_per_step({"tables": tables, "project": system, "nb_lb": ref}, xyz, box, platform, props,
                             args.steps, args.npt, args.repeats)
            ok = abs(de) <= 1e-3 and df <= 1e-3
            row = {"atoms": system.getNumParticles(), "mof_atoms": len(info["mof_atom_indices"]), "ms_per_step": ms,
                   "tables_over_project": ms["tables"] / ms["project"], "project_over_nb_lb": ms["project"] / ms["nb_lb"],
                   "energy_project_with_mof_pairs_minus_tables_kj_mol": de, "energy_tables_kj_mol": e_tab,
                   "max_force_diff_mobile_rel": float(df), "agree": bool(ok)}
            if args.platform == "CPU":
                k = kernel_ms(system, info, xyz, box, platform, props)
                bound = (ms["project"] - k["lj_geometric"] + k["custom_floor"]) / ms["nb_lb"]
                row["kernel_ms"] = k
                row["floor_bound_project_over_nb_lb"] = bound
            results["systems"][name] = row
            print(f"{name:8} {row['atoms']:6d} {ms['tables']:9.2f} {ms['project']:9.2f} {ms['nb_lb']:9.2f} "
                  f"{row['tables_over_project']:15.2f} {row['project_over_nb_lb']:14.2f}  "
                  f"dE={de:+.1e} kJ/mol dF={df:.1e} {'OK' if ok else 'MISMATCH'}", flush=True)
            if "kernel_ms" in row:
                k = row["kernel_ms"]
                print(f"{'':8} forces only, ms: LJGeometric {k['lj_geometric']:.2f}, CustomNonbondedForce 'r' floor "
                      f"{k['custom_floor']:.2f}, reference NonbondedForce {k['nb_lb_nonbonded']:.2f}; floor bound "
                      f"project/nb_lb >= {row['floor_bound_project_over_nb_lb']:.2f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0 if all(r["agree"] for r in results["systems"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
