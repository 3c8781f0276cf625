"""Analyse a paper slice (benchmarks/paper_slice.py output) and write its report: per-system transport.json,
the cross-system study (comparison table with verdicts, figures) and a slice.json with hardware and ns/day.

The slice's folders are laid out as the workflow's (results/{system}/rep0/{T}K/md/{stage},
results/{system}/rep0/build/composition.json) so that analysis.production and analysis.study read them
exactly as they read a workflow run; the production stage may have stopped at its wall budget (its
trajectory is analysed as far as it got).

    python benchmarks/paper_slice_report.py --slice /work/slice/run --boxes /work/slice/box \
        --params /work/slice/params --config /work/slice/paper_cpu.yaml --temperature 353 --out docs/paper_slice
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spemd.analysis.production import analyse_production  # noqa: E402
from spemd.analysis.study import run_study  # noqa: E402
from spemd.config import load_config  # noqa: E402
from spemd.files import write_json_atomic  # noqa: E402
from spemd.provenance import provenance  # noqa: E402



def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _stage_record(stage_dir: Path) -> dict:
    done = stage_dir / "done.json"
    if done.is_file():
        d = json.loads(done.read_text())
        return {k: d.get(k) for k in ("steps", "simulated_time_ps", "ns_per_day", "platform", "device", "wall_seconds_this_run")} | {"complete": True}
    ckpt = stage_dir / "state.csv"
    if not ckpt.is_file():
        return {"complete": False, "ran": False}
    rows = ckpt.read_text().strip().splitlines()
    last = rows[-1].split(",") if len(rows) > 1 else []
    header = rows[0].split(",") if rows else []
    time_ps = float(last[header.index("Time (ps)")]) if "Time (ps)" in header and last else float("nan")
    return {"complete": False, "ran": True, "time_ps_reached": time_ps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slice", required=True, help="paper_slice.py --out folder (one subfolder per system)")
    ap.add_argument("--boxes", required=True, help="folder with {system}/composition.json from spemd build")
    ap.add_argument("--params", required=True, help="folder with {system}/ params from spemd parametrise")
    ap.add_argument("--config", required=True)
    ap.add_argument("--temperature", type=float, default=353.0)
    ap.add_argument("--work", default=None, help="where the workflow-like layout is made (default: <slice>/results)")
    ap.add_argument("--out", required=True, help="report folder (committed): study/, {system}_transport.json, slice.json")
    args = ap.parse_args(argv)
    config = load_config(args.config)
    slice_dir, out = Path(args.slice), Path(args.out)
    work = Path(args.work) if args.work else slice_dir / "results"
    T = args.temperature
    systems = sorted(p.name for p in slice_dir.iterdir() if (p / "production").is_dir())
    if not systems:
        raise SystemExit(f"{slice_dir}: no system folder with a production stage")
    transports, summary = [], {"temperature_K": T, "cpu": _cpu_name(), "systems": {}}
    for system in systems:
        run = work / system / "rep0"
        (run / "build").mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(args.boxes) / system / "composition.json", run / "build" / "composition.json")
        md = run / f"{T:g}K" / "md"
        md.mkdir(parents=True, exist_ok=True)
        for stage in (st["name"] for st in config["protocol"]["stages"]):
            link = md / stage
            if not link.exists():
                link.symlink_to((slice_dir / system / stage).resolve(), target_is_directory=True)
        params = Path(args.params) / system
        ff = json.loads((params / "forcefield.json").read_text())
        analysis_dir = run / f"{T:g}K" / "analysis"
        analyse_production(params / "topology.pdb", md / "production" / "trajectory.dcd", analysis_dir,
                           config.get("analysis", {}), ff["charge_scale"], T,
                           provenance_extra={"system": system, "replica": 0, "temperature_K": T})
        transports.append(analysis_dir / "transport.json")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(analysis_dir / "transport.json", out / f"{system}_transport.json")
        stages = [st["name"] for st in config["protocol"]["stages"]]
        summary["systems"][system] = {stage: _stage_record(slice_dir / system / stage) for stage in stages}
        summary["systems"][system]["atoms"] = json.loads((Path(args.boxes) / system / "composition.json").read_text())["counts"]["atoms"]
        for stage in stages:
            src = slice_dir / system / stage / "state.csv"
            if src.is_file():
                shutil.copy(src, out / f"{system}_{stage}_state.csv")
    run_study(transports, out / "study", config["systems"])
    summary["provenance"] = provenance(seed=config["seed"], config=config)
    write_json_atomic(out / "slice.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "provenance"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
