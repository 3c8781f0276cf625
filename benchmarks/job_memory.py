"""Peak memory (max resident set size) of each workflow job type, for the resource formulas of
rules/common.smk (docs/running.md, "Job resources").

Usage: python benchmarks/job_memory.py [--out DIR] [--paper CPE-10 ...] [--skip-default]
Runs, one `spemd` process each under /usr/bin/time (its "%M", the peak RSS in KiB), the jobs of the
default config's two boxes (config/config.yaml: PEO and CPE) as the workflow would: build, parametrise,
minimise, the first MD stage and the production stage, then analyse-run. The MD stages are shortened
(first stage SHORT_PS, production PRODUCTION_FRAMES frames) on OpenMM's CPU platform with one thread:
an MD job's memory is the System, the Context and one frame, not the stage length; analysis holds every
frame of the ions. `--paper CPE-10` does the same for config/paper.yaml's CPE-10 box (its build is the
one benchmarks/build_speed.py times), with even shorter stages (PAPER_* below).
Prints one line per job: config, system, job, atoms, frames, peak MiB, wall s.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHORT_PS = 1.0
PRODUCTION_FRAMES = 20
# paper-scale boxes on CPU: just long enough to reach each job's peak (the System, Context and one frame)
PAPER_FRAMES = 5
PAPER_FRAME_PS = 0.04
PAPER_MINIMISE_ITERATIONS = 20


def spemd(args, cfg: dict, log: Path):
    """Run one `spemd` subcommand; returns (peak RSS in MiB, wall seconds)."""
    stats = log.with_suffix(".time")
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(stats), sys.executable, "-m", "spemd", args[0],
           "--config-json", json.dumps(cfg), *args[1:]]
    env = {**os.environ, "OPENMM_CPU_THREADS": "1", "SPEMD_MD_MAX_THREADS": "1"}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed (exit {rc}); log: {log}")
    return int(stats.read_text().split()[-1]) / 1024.0, wall


def run_jobs(config_file: Path, systems, out: Path, first_ps: float, frames: int, frame_ps=None,
             minimise_iterations=None) -> None:
    """The jobs of `systems` of `config_file`, MD stages shortened to `first_ps` and `frames` frames."""
    from spemd.config import validate_config

    config = validate_config(yaml.safe_load(config_file.read_text()))
    config["platform"] = {**config["platform"], "name": "CPU"}
    stages = config["protocol"]["stages"]
    first, production = dict(stages[0]), dict(stages[-1])
    first.update(time_ps=first_ps)
    frame_ps = frame_ps or production["trajectory_interval_ps"]
    production.update(time_ps=frames * frame_ps, trajectory_interval_ps=frame_ps, state_interval_ps=frame_ps)
    protocol = {**config["protocol"], "stages": [first, production]}
    if minimise_iterations:
        protocol["minimise_max_iterations"] = minimise_iterations
    T = config["temperatures_K"][0]
    for system in systems:
        run = out / f"{config_file.stem}_{system}"
        run.mkdir(parents=True, exist_ok=True)
        sec = lambda *names, **extra: {**{n: config[n] for n in names}, **extra}  # noqa: E731
        jobs = [
            ("build", ["build", "--system", system, "--replica", "0", "--out", str(run / "build")],
             sec("build", "seed", "forcefield", systems={system: config["systems"][system]})),
            ("parametrise", ["parametrise", "--box", str(run / "build" / "box.pdb"), "--out", str(run / "params")],
             sec("forcefield")),
            ("minimise", ["minimise", "--params", str(run / "params"), "--out", str(run / "minimise")],
             sec("platform", protocol=protocol)),
            (f"md {first['name']}", ["md", "--params", str(run / "params"), "--stage", first["name"], "--temperature",
                                     str(T), "--start", str(run / "minimise" / "state.xml"), "--out", str(run / first["name"])],
             sec("platform", "seed", protocol=protocol)),
            (f"md {production['name']}", ["md", "--params", str(run / "params"), "--stage", production["name"],
                                          "--temperature", str(T), "--start", str(run / first["name"] / "state.xml"),
                                          "--out", str(run / production["name"])],
             sec("platform", "seed", protocol=protocol)),
            ("analyse", ["analyse-run", "--params", str(run / "params"), "--production", str(run / production["name"]),
                         "--temperature", str(T), "--system", system, "--out", str(run / "analysis")],
             sec("analysis")),
        ]
        for job, args, cfg in jobs:
            mib, wall = spemd(args, cfg, run / f"{job.replace(' ', '_')}.log")
            atoms = json.loads((run / "build" / "composition.json").read_text())["counts"]["atoms"]
            shown = frames if job == "analyse" else "-"
            print(f"{config_file.name} {system:8s} {job:16s} {atoms:7d} atoms  frames {shown!s:>3}  "
                  f"peak {mib:8.1f} MiB  {wall:6.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--paper", nargs="*", default=[], metavar="SYSTEM",
                    help="also these systems of config/paper.yaml (MD stages of PAPER_STEPS steps, "
                         "minimiser capped at PAPER_MINIMISE_ITERATIONS)")
    ap.add_argument("--skip-default", action="store_true", help="only the --paper systems")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="spemd_mem_"))
    if not args.skip_default:
        run_jobs(ROOT / "config" / "config.yaml", ["PEO", "CPE"], out, SHORT_PS, PRODUCTION_FRAMES)
    if args.paper:
        run_jobs(ROOT / "config" / "paper.yaml", args.paper, out, PAPER_FRAME_PS * PAPER_FRAMES, PAPER_FRAMES,
                 frame_ps=PAPER_FRAME_PS, minimise_iterations=PAPER_MINIMISE_ITERATIONS)


if __name__ == "__main__":
    main()
