"""A slice of the paper-scale study on one GPU: minimise, anneal, cool, NPT-equilibrate and produce.

Runs the project's own engine (pipeline.engine) on params folders built and parametrised beforehand
(`spemd build` + `spemd parametrise` with config/paper.yaml), one system after the other (one
simulation per GPU), within a wall-clock budget per system: the production stage stops cleanly when
its share runs out (StageIncomplete), exactly as a batch job would, and what it produced is kept.
Needs only openmm, numpy, pyyaml, jsonschema and the project's packages, so it runs on a bare GPU
machine with the OpenMM wheels.

    python benchmarks/paper_slice.py --params gpu_inputs/PEO gpu_inputs/CPE-10 --temperature 353 \
        --budget-s 200 --out $OUT/slice
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spemd.pipeline import engine  # noqa: E402
from spemd.config import load_config  # noqa: E402
from spemd.pipeline.cli import resolve_stage_temperature  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def slice_stages(config_stages: list[dict], production_ps: float, frame_ps: float, scale: float = 1.0,
                 lengths_ps: dict | None = None) -> list[dict]:
    """The config's own stages (config/paper.yaml has the full lengths), shortened for a slice.

    `scale` shortens the stages before production (an until-stage's max_time_ps with it); `lengths_ps`
    {stage: ps} sets single stages' lengths instead (after the scale). Production runs `production_ps`
    with a frame and a state row every `frame_ps`."""
    stages = [dict(st) for st in config_stages]
    stages[-1].update(time_ps=production_ps, trajectory_interval_ps=frame_ps, state_interval_ps=frame_ps)
    for stage in stages[:-1]:
        length = (lengths_ps or {}).get(stage["name"], stage["time_ps"] * scale)
        if "max_time_ps" in stage:
            stage["max_time_ps"] = max(length, stage["max_time_ps"] * length / stage["time_ps"])
        stage["time_ps"] = length
        # >= 20 rows per stage (the study's density-drift check fits 5 block means of the second half),
        # a whole number of 0.1 ps (= whole 4, 2 or 1 fs steps)
        stage["state_interval_ps"] = max(0.1, math.floor(10 * min(stage.get("state_interval_ps", 10.0),
                                                                  stage["time_ps"] / 20)) / 10)
    return stages


def run_system(params: Path, out: Path, config: dict, temperature_K: float, budget_s: float,
               production_ps: float, frame_ps: float, scale: float = 1.0, lengths_ps: dict | None = None,
               minimise_iterations: int | None = None) -> dict:
    protocol = {**config["protocol"], "checkpoint_minutes": 2.0}
    if minimise_iterations is not None:
        protocol["minimise_max_iterations"] = int(minimise_iterations)
    platform = config["platform"]
    t0 = time.perf_counter()
    summary = {"system": params.name, "stages": {}}
    engine.minimise(params, protocol, platform, out / "minimise")
    start = out / "minimise" / "state.xml"
    for stage in slice_stages(config["protocol"]["stages"], production_ps, frame_ps, scale, lengths_ps):
        stage = resolve_stage_temperature(stage, temperature_K)
        left = budget_s - (time.perf_counter() - t0)
        try:
            done = engine.run_stage(params, stage, protocol, platform, temperature_K=temperature_K,
                                    seed=config["seed"], start_state=start, out_dir=out / stage["name"],
                                    max_wall_seconds=max(left, 1.0))
            summary["stages"][stage["name"]] = {k: done.get(k) for k in ("steps", "simulated_time_ps", "ns_per_day", "platform", "device")}
        except engine.StageIncomplete as exc:
            summary["stages"][stage["name"]] = {"incomplete": str(exc)}
            break
        start = out / stage["name"] / "state.xml"
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", nargs="+", required=True, help="params folders (named after their system)")
    ap.add_argument("--config", default=str(ROOT / "config" / "paper.yaml"))
    ap.add_argument("--temperature", type=float, default=353.0)
    ap.add_argument("--budget-s", type=float, default=200.0, help="wall seconds per system")
    ap.add_argument("--production-ps", type=float, default=5000.0)
    ap.add_argument("--frame-ps", type=float, default=40.0)
    ap.add_argument("--stage-scale", type=float, default=1.0, help="factor on the lengths of the stages before production")
    ap.add_argument("--stage-ps", nargs="*", default=[], metavar="STAGE=PS",
                    help="length of single stages before production, e.g. cool=6 equilibrate=12")
    ap.add_argument("--minimise-iterations", type=int, default=None,
                    help="cap on the minimiser's iterations (default: the config's protocol.minimise_max_iterations)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    config = load_config(args.config)
    names = [st["name"] for st in config["protocol"]["stages"]][:-1]
    lengths = {}
    for item in args.stage_ps:
        name, _, value = item.partition("=")
        if name not in names or not value:
            ap.error(f"--stage-ps {item!r}: expected STAGE=PS with STAGE one of {', '.join(names)}")
        lengths[name] = float(value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    results = []
    for params in map(Path, args.params):
        results.append(run_system(params, out / params.name, config, args.temperature, args.budget_s,
                                  args.production_ps, args.frame_ps, args.stage_scale, lengths,
                                  args.minimise_iterations))
        print(json.dumps(results[-1]), flush=True)
    (out / "slice_summary.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
