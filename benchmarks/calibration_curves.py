"""E_ads vs the binding O - metal distance for the fitted (and the geometric) metal-O(TFSI) pairs.

For each model, the best start recorded in docs/calibration/<model>.json (the output of `spemd
calibrate`) is minimised at the fitted pair (reproducing its E_ads), then the binding O - metal distance
is scanned with a stiff restraint (forcefields.calibration.distance_curve), outwards and inwards from
the minimum, each distance from the previous pose. Writes docs/calibration/curves.csv and curves.png.

    python benchmarks/calibration_curves.py --models Fe Ni FeNi --out docs/calibration
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spemd.forcefields import calibration as cal  # noqa: E402

DISTANCES_NM = np.round(np.arange(0.18, 0.601, 0.03), 3)


def curve(model: str, record: dict, pair: dict, label: str) -> list[dict]:
    ff = {"charge_scale": record["charge_scale"], "mof_charge_scale": record["mof_charge_scale"]}
    start = {"label": "best start", "tfsi_nm": record["best_start_tfsi_nm"]}
    d = cal.adsorption_energy_details(model, ff, pair, n_rotations=0, seeds=[start])
    r_eq = d["best_pose"]["o_metal_distance_nm"]
    up = [r for r in DISTANCES_NM if r > r_eq]
    down = [r for r in DISTANCES_NM[::-1] if r <= r_eq]
    rows = cal.distance_curve(model, ff, pair, d["best_tfsi_nm"], down) + cal.distance_curve(model, ff, pair, d["best_tfsi_nm"], up)
    rows.append({"target_nm": None, "distance_nm": r_eq, "e_ads_eV": d["e_ads_eV"], "e_ads_kj_mol": d["e_ads_kj_mol"], "o_atom": "free minimum"})
    for row in rows:
        row.update(model=model, pair=label)
    return sorted(rows, key=lambda r: r["distance_nm"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["Fe", "Ni", "FeNi"])
    ap.add_argument("--geometric", action="store_true", help="also scan the uncalibrated (geometric) pair")
    ap.add_argument("--out", default="docs/calibration")
    args = ap.parse_args(argv)
    out = Path(args.out)
    rows = []
    for model in args.models:
        record = json.loads((out / f"{model}.json").read_text())
        t0 = time.perf_counter()
        rows += curve(model, record, record["fitted"], "fitted")
        if args.geometric:
            rows += curve(model, record, cal.pair_overrides(model), "geometric")
        print(f"{model}: {time.perf_counter() - t0:.0f} s", flush=True)
    keys = ["model", "pair", "target_nm", "distance_nm", "e_ads_eV", "e_ads_kj_mol", "o_atom"]
    with open(out / "curves.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.5f}" if isinstance(r.get(k), float) else r.get(k)) for k in keys})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (model, pair), colour in zip(sorted({(r["model"], r["pair"]) for r in rows}), plt.cm.tab10.colors):
        pts = [r for r in rows if r["model"] == model and r["pair"] == pair and r["target_nm"] is not None]
        free = [r for r in rows if r["model"] == model and r["pair"] == pair and r["target_nm"] is None]
        ax.plot([r["distance_nm"] for r in pts], [r["e_ads_eV"] for r in pts], marker="o", ms=3, color=colour,
                ls="-" if pair == "fitted" else "--", label=f"{model} ({pair})")  # fmt: skip
        ax.plot([r["distance_nm"] for r in free], [r["e_ads_eV"] for r in free], "*", ms=10, color=colour)
        if pair == "fitted":
            ax.axhline(cal.DEFAULT_TARGETS_EV[model], color=colour, lw=0.8, ls=":")
    ax.set_xlabel("binding O - metal distance (nm)")
    ax.set_ylabel("E_ads (eV)")
    ax.set_title("TFSI- on the open metal site (restrained scan; * free minimum, dotted: target)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=150)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
