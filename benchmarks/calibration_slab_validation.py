"""Slab validation of the cluster-fitted site terms: E_ads of TFSI- on the capped 1x1x1 slab per host.

The terms of forcefields/calibration.json (fitted on M2(HCOO)4 clusters, forcefields/cluster_calibration.py)
are carried unchanged into the slab (all three in metal_o_tfsi: each acts only on its own atom type) and
E_ads is measured with forcefields.calibration.adsorption_energy_details (plain Ewald, one CPU thread,
the best of the systematic starts at the open site of each metal element of the host; E_ads = E(best
adsorbed pose) - E(TFSI- in mid-vacuum)). For FeNi the best pose is also reported per site element (the
Fe site is the active one). `--rotations` sets the starts per site (3: the full 87; 1: 29, documented
as a reduced set). Writes <out>/slab_validation.json and prints one line per host.

    python benchmarks/calibration_slab_validation.py --rotations 1 --out docs/calibration
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spemd.forcefields import calibration as cal  # noqa: E402
from spemd.forcefields.cluster_calibration import SHIPPED, load_terms  # noqa: E402
from spemd.resources import forcefield_dir  # noqa: E402
from spemd.units import KJ_PER_MOL_PER_EV  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", nargs="+", default=["Fe", "Ni", "FeNi"])
    ap.add_argument("--rotations", type=int, default=cal.N_ROTATIONS)
    ap.add_argument("--uncalibrated", action="store_true", help="also measure with the geometric pairs (no site term)")
    ap.add_argument("--out", default="docs/calibration")
    args = ap.parse_args(argv)
    terms = load_terms(forcefield_dir() / SHIPPED)
    ff = {k: terms[k] for k in ("charge_scale", "mof_charge_scale", "mof_charges")}
    out = Path(args.out) / "slab_validation.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    for host in args.hosts:
        for label, pairs in (("calibrated", terms["fitted"]), ("uncalibrated", {}))[: 2 if args.uncalibrated else 1]:
            t0 = time.perf_counter()
            d = cal.adsorption_energy_details(host, ff | {"metal_o_tfsi": pairs}, n_rotations=args.rotations)
            per_site = {}
            for p in d["poses"]:
                if p["bound"] and p["element"] is not None:
                    e = (p["energy_kj_mol"] - d["e_far_kj_mol"]) / KJ_PER_MOL_PER_EV
                    per_site[p["element"]] = min(per_site.get(p["element"], 0.0), e)
            results[f"{host}/{label}"] = {
                "host": host, "terms": label, "e_ads_eV": d["e_ads_eV"], "best_site_eV": per_site,
                "best_pose": d["best_pose"], "n_starts": d["n_starts"], "rotations": args.rotations,
                "metal_o_tfsi": d["metal_o_tfsi"], "wall_s": time.perf_counter() - t0,
                "cpu": platform.processor() or platform.machine(), "threads": 1,
            }  # fmt: skip
            print(f"{host} {label}: E_ads {d['e_ads_eV']:.4f} eV (per site {per_site}), best {d['best_pose']['label']} "
                  f"O-M {d['best_pose']['o_metal_distance_nm']:.3f} nm, {d['n_starts']} starts, {time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
            out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
