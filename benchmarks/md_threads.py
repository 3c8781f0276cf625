"""Threads for the MD jobs: two simulations side by side at 1 thread each, or one after the other at N.

The default config's two boxes (PEO, CPE) are built and parametrised with the project's own functions
(as in benchmarks/lj_forms.py), then the same number of MD steps of each is run, in separate
processes (as Snakemake runs jobs), in two schedules:

  parallel  - PEO and CPE at the same time, 1 OpenMM CPU thread each: wall = the later of the two
  serial    - PEO, then CPE, each with --threads threads: wall = the sum

Each process creates its Context and warms up (10 steps) first; the parent then starts the timed
loops of both (parallel) or of one (serial) with a go file, so start-up is not timed. The schedules
are interleaved (parallel, serial, parallel, ...) and the median of the repeats is reported, because
on a shared machine other users' jobs change absolute times between runs: compare the RATIO.
Also printed: the 2-thread speed-up of each box alone (ms/step at 1 thread / at N threads).

    python benchmarks/md_threads.py --threads 2 --steps 300 --repeats 3 [--cache DIR] [--out md_threads.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent))


def _prepare(cfg_path: str, cache: Path) -> list[str]:
    import openmm
    import openmm.unit as u

    import lj_forms
    from spemd.config import load_config

    cfg = load_config(cfg_path)
    platform = openmm.Platform.getPlatformByName("CPU")
    names = list(cfg["systems"])
    for name in names:
        if (cache / f"{name}.xml").is_file() and (cache / f"{name}.pkl").is_file():
            continue
        system, info, xyz, box = lj_forms.prepare(name, cfg, cache / "build", platform, {"Threads": "1"})
        (cache / f"{name}.xml").write_text(openmm.XmlSerializer.serialize(system))
        with open(cache / f"{name}.pkl", "wb") as fh:
            pickle.dump({"info": info, "xyz": xyz.value_in_unit(u.nanometer),
                         "box": [v.value_in_unit(u.nanometer) for v in box]}, fh)
    return names


def _worker(cache: str, name: str, threads: int, steps: int, go: str, ready: str) -> None:
    """Child process: Context, warm-up, touch `ready`, wait for `go`, time `steps` steps (wall), print JSON."""
    import openmm
    import openmm.unit as u

    system = openmm.XmlSerializer.deserialize(Path(cache, f"{name}.xml").read_text())
    with open(Path(cache, f"{name}.pkl"), "rb") as fh:
        d = pickle.load(fh)
    integ = openmm.LangevinMiddleIntegrator(353 * u.kelvin, 1 / u.picosecond, 2 * u.femtosecond)
    integ.setRandomNumberSeed(7)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)})
    ctx.setPeriodicBoxVectors(*d["box"])
    ctx.setPositions(d["xyz"])
    ctx.setVelocitiesToTemperature(353 * u.kelvin, 11)
    integ.step(10)
    ctx.getState(getEnergy=True)
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.01)
    t0 = time.perf_counter()
    integ.step(steps)
    ctx.getState(getPositions=True)
    print(json.dumps({"name": name, "threads": threads, "wall_s": time.perf_counter() - t0}), flush=True)


def _run(cache: Path, jobs: list[tuple[str, int]], steps: int) -> list[dict]:
    """Start the `jobs` (name, threads) together, wait until all are warm, release them at once."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp, "go")
        procs = []
        for k, (name, threads) in enumerate(jobs):
            ready = Path(tmp, f"ready{k}")
            cmd = [sys.executable, str(HERE), "--worker", str(cache), name, str(threads), str(steps), str(go), str(ready)]
            procs.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True), ready))
        while not all(r.exists() for _, r in procs):
            if any(p.poll() not in (None, 0) for p, _ in procs):
                raise RuntimeError("a worker failed")
            time.sleep(0.05)
        go.touch()
        return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p, _ in procs]


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:4], int(sys.argv[4]), int(sys.argv[5]), *sys.argv[6:8])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--threads", type=int, default=2, help="threads per job in the serial schedule")
    ap.add_argument("--steps", type=int, default=300, help="timed MD steps of each box")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", default=None, help="folder to keep the built boxes in between runs")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    import openmm

    tmp = None
    if args.cache:
        cache = Path(args.cache)
        cache.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        cache = Path(tmp.name)
    names = _prepare(args.config, cache)
    n = args.threads
    print(f"OpenMM {openmm.__version__} CPU, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
          f"{args.steps} steps of each of {', '.join(names)}; wall time, median of {args.repeats} interleaved repeats")
    runs = {"parallel_1thread": [], f"serial_{n}threads": []}
    alone = {f"{name}@{t}": [] for name in names for t in (1, n)}
    for rep in range(args.repeats):
        par = _run(cache, [(name, 1) for name in names], args.steps)
        runs["parallel_1thread"].append(max(r["wall_s"] for r in par))
        ser = [_run(cache, [(name, n)], args.steps)[0] for name in names]
        runs[f"serial_{n}threads"].append(sum(r["wall_s"] for r in ser))
        for r in ser:
            alone[f"{r['name']}@{n}"].append(r["wall_s"])
        for name in names:  # 1 thread alone, for the speed-up
            alone[f"{name}@1"].append(_run(cache, [(name, 1)], args.steps)[0]["wall_s"])
        print(f"  repeat {rep + 1}: parallel {runs['parallel_1thread'][-1]:.2f} s, serial {runs[f'serial_{n}threads'][-1]:.2f} s, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    ms = {k: statistics.median(v) / args.steps * 1e3 for k, v in alone.items()}
    result = {"openmm": openmm.__version__, "cpus": os.cpu_count(), "steps": args.steps, "threads": n,
              "wall_s": runs, "median_wall_s": med, "alone_ms_per_step": ms,
              "speedup": {name: ms[f"{name}@1"] / ms[f"{name}@{n}"] for name in names},
              "serial_over_parallel": med[f"serial_{n}threads"] / med["parallel_1thread"]}
    for name in names:
        print(f"{name}: {ms[f'{name}@1']:.2f} ms/step at 1 thread, {ms[f'{name}@{n}']:.2f} at {n} -> speed-up {result['speedup'][name]:.2f}x")
    print(f"both boxes, {args.steps} steps each: parallel at 1 thread {med['parallel_1thread']:.2f} s, "
          f"serial at {n} threads {med[f'serial_{n}threads']:.2f} s -> serial/parallel {result['serial_over_parallel']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
