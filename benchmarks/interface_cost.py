"""What the interface analysis (analysis/interface.py) adds to `analyse-run` on one run's production.

Times analysis.production.analyse_production (which calls analysis.interface.analyse_interface once,
in its own pass over the trajectory) and analyse_interface alone on the same files, each best of
`--repeats` (wall clock, outputs to a temporary folder), and prints the ratio

    added = t(interface) / (t(analyse_production) - t(interface))

(the issue's budget: <= 0.30 on the default run's CPE). Run on a finished workflow, e.g.

    .venv/bin/python benchmarks/interface_cost.py results/CPE/rep0 --temperature 353 --config config/config.yaml
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="results/{system}/rep{replica}")
    ap.add_argument("--temperature", type=float, required=True, help="run temperature (K)")
    ap.add_argument("--config", type=Path, required=True, help="the workflow's config (analysis section, charge scale)")
    ap.add_argument("--stage", default="production", help="MD stage to analyse (default production)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many timings (default 2)")
    args = ap.parse_args(argv)

    from spemd.analysis._common import load_universe
    from spemd.analysis.interface import analyse_interface
    from spemd.analysis.production import analyse_production
    from spemd.config import load_config

    cfg = load_config(args.config)
    top = args.run / "params" / "topology.pdb"
    traj = args.run / f"{args.temperature:g}K" / "md" / args.stage / "trajectory.dcd"
    t_all, t_iface, out = [], [], None
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            transport = analyse_production(top, traj, tmp, cfg["analysis"], cfg["forcefield"]["charge_scale"],
                                           args.temperature)
            t_all.append(time.perf_counter() - t0)
            shell = transport["rdf"].get("Na-O_TFSI", {}).get("first_shell_radius_nm")
            u = load_universe(top, traj)
            t0 = time.perf_counter()
            out = analyse_interface(u, Path(tmp) / "again", shell, args.temperature)
            t_iface.append(time.perf_counter() - t0)
    a, i = min(t_all), min(t_iface)
    print(json.dumps({"analyse_production_s": a, "interface_s": i, "added_fraction": i / (a - i),
                      "n_frames": out["n_frames"], "composite": out["composite"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
