"""Overhead of pipeline.engine.run_stage over a bare OpenMM loop (target: ratio >= 0.97).

Builds a TIP3P water box (Modeller.addSolvent, PME 0.9 nm, HBonds, HMR), minimises it, then on the
same System, platform and time step measures, in one process:

  bare   - LangevinMiddleIntegrator + MonteCarloBarostat(every 25 steps), integrator.step in chunks
  stage  - run_stage, NPT, default reporting intervals (DCD + state.csv every 1 ps, log, checkpoints)

Order: bare, stage, bare; the ratio is stage / mean(bare). Context creation is excluded from both;
both end with a state download so GPU work is finished when the clock stops.
Needs only openmm, numpy and the project's pipeline package.

    python benchmarks/engine_overhead.py --platform CUDA --atoms 25000 --time-ps 100 --out bench.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import openmm
from openmm import unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spemd.pipeline import engine  # noqa: E402
from spemd.files import write_json_atomic  # noqa: E402
from spemd.pipeline.platforms import select_platform  # noqa: E402
from spemd.pipeline.testsystems import water_params  # noqa: E402

WATER_PER_NM3 = 33.4
CUTOFF_NM = 0.9
BAROSTAT_INTERVAL = 25
TEMPERATURE_K = 300.0
SEED = 2025


def bare_ns_per_day(params_dir: Path, start_xml: Path, platform_cfg: dict, timestep_fs: float, n_steps: int,
                    chunk: int) -> tuple[float, str]:
    system = openmm.XmlSerializer.deserialize((params_dir / "system.xml").read_text())
    system.addForce(openmm.MonteCarloBarostat(1.0 * unit.bar, TEMPERATURE_K * unit.kelvin, BAROSTAT_INTERVAL))
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE_K * unit.kelvin, 1.0 / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    platform, props, description = select_platform(platform_cfg)
    context = openmm.Context(system, integrator, platform, props)
    state = openmm.XmlSerializer.deserialize(start_xml.read_text())
    context.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
    context.setPositions(state.getPositions())
    context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, SEED)
    context.getState(getPositions=True)
    t0 = time.perf_counter()
    done = 0
    while done < n_steps:
        k = min(chunk, n_steps - done)
        integrator.step(k)
        done += k
    context.getState(getPositions=True)  # wait for the device
    wall = time.perf_counter() - t0
    del context, integrator
    return n_steps * timestep_fs * 1e-6 / (wall / 86400.0), description


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--platform", default="auto", choices=["auto", "CUDA", "OpenCL", "CPU", "Reference"])
    ap.add_argument("--precision", default="mixed", choices=["mixed", "single", "double"])
    ap.add_argument("--device-index", type=int, default=None)
    ap.add_argument("--atoms", type=int, default=25000, help="approximate atom count of the water box")
    ap.add_argument("--time-ps", type=float, default=50.0, help="simulated time of each timed run (ps)")
    ap.add_argument("--timestep-fs", type=float, default=4.0)
    ap.add_argument("--hmr", type=float, default=1.5, help="hydrogen mass (amu)")
    ap.add_argument("--chunk", type=int, default=250, help="steps per integrator.step call in the bare loop")
    ap.add_argument("--workdir", default=None, help="where to build the box (default: a temporary folder)")
    ap.add_argument("--out", default="engine_overhead.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    box_nm = max((args.atoms / 3.0 / WATER_PER_NM3) ** (1.0 / 3.0), 2.0 * CUTOFF_NM + 0.2)
    platform_cfg = {"name": args.platform, "device_index": args.device_index, "precision": args.precision}
    protocol = {"timestep_fs": args.timestep_fs, "barostat_interval": BAROSTAT_INTERVAL, "friction_per_ps": 1.0,
                "pressure_bar": 1.0, "minimise_max_iterations": 500}
    n_steps = int(round(args.time_ps * 1000.0 / args.timestep_fs))
    time_ps = n_steps * args.timestep_fs / 1000.0

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        params = water_params(tmp / "params", box_nm=box_nm, cutoff_nm=CUTOFF_NM, hydrogen_mass_amu=args.hmr)
        n_atoms = openmm.XmlSerializer.deserialize((params / "system.xml").read_text()).getNumParticles()
        engine.minimise(params, protocol, platform_cfg, tmp / "min")
        start = tmp / "min" / "state.xml"
        # warm-up (kernel compilation, caches), not timed
        bare_ns_per_day(params, start, platform_cfg, args.timestep_fs, min(n_steps, 500), args.chunk)
        bare1, description = bare_ns_per_day(params, start, platform_cfg, args.timestep_fs, n_steps, args.chunk)
        stage = {"name": "production", "ensemble": "NPT", "time_ps": time_ps}  # default reporting intervals
        os.environ.pop("SPEMD_MAX_WALL_SECONDS", None)
        done = engine.run_stage(params, stage, protocol, platform_cfg, TEMPERATURE_K, SEED, start, tmp / "stage")
        bare2, _ = bare_ns_per_day(params, start, platform_cfg, args.timestep_fs, n_steps, args.chunk)

    bare = (bare1 + bare2) / 2.0
    ratio = done["ns_per_day"] / bare
    result = {
        "device": description,
        "platform": done["platform"],
        "openmm": openmm.__version__,
        "atoms": n_atoms,
        "box_nm": box_nm,
        "timestep_fs": args.timestep_fs,
        "hydrogen_mass_amu": args.hmr,
        "time_ps_per_run": time_ps,
        "steps_per_run": n_steps,
        "bare_ns_per_day": [bare1, bare2],
        "bare_ns_per_day_mean": bare,
        "stage_ns_per_day": done["ns_per_day"],
        "stage_trajectory_frames": done["trajectory_frames"],
        "ratio_stage_over_bare": ratio,
        "target_ratio": 0.97,
        "meets_target": ratio >= 0.97,
    }
    write_json_atomic(args.out, result)
    print(f"device: {description}  ({n_atoms} atoms, {args.timestep_fs} fs, {time_ps} ps per run)")
    print(f"bare OpenMM loop : {bare1:.4g} / {bare2:.4g} ns/day (mean {bare:.4g})")
    print(f"run_stage        : {done['ns_per_day']:.4g} ns/day")
    print(f"ratio            : {ratio:.3f} (target >= 0.97) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
