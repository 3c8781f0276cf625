"""Cluster calibration figures: E(r) binding curves, pictures of the minima, convergence with the starts.

For each model of forcefields/calibration.json (or --terms FILE):
* curves: the binding O - metal distance restrained (forcefields.cluster_calibration.distance_curve,
  20 000 kJ/mol/nm^2) from the fitted minimum outwards and inwards (DISTANCES_NM), each distance from the
  previous pose, at the fitted C4 and at C4 = 0 (the geometric 12-6 pair) -> cluster_curves.csv / .png;
* pictures: the fitted minimum projected on two planes -> cluster_poses.png;
* convergence: every systematic start minimised at the fitted C4; the best of the first N starts, in the
  generator's order and in reverse, -> cluster_convergence.json.

    python benchmarks/calibration_cluster.py --out docs/calibration
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

from spemd.forcefields import cluster_calibration as cc  # noqa: E402
from spemd.resources import forcefield_dir  # noqa: E402

DISTANCES_NM = np.round(np.arange(0.16, 0.601, 0.02), 3)
COLOURS = {"Fe": "tab:orange", "Ni": "tab:green", "FeNi": "tab:purple"}
ELEMENT_COLOURS = {"Fe": "tab:orange", "Ni": "tab:green", "O": "red", "C": "dimgray", "H": "lightgray", "N": "blue",
                   "S": "gold", "F": "limegreen"}  # fmt: skip


def curve(model: str, ff: dict, c4: float, tfsi_xyz, r_eq: float) -> list[dict]:
    down = [r for r in DISTANCES_NM[::-1] if r <= r_eq]
    up = [r for r in DISTANCES_NM if r > r_eq]
    rows = cc.distance_curve(model, ff, c4, tfsi_xyz, down) + cc.distance_curve(model, ff, c4, tfsi_xyz, up)
    return sorted(rows, key=lambda r: r["r0_nm"])


def plot_curves(rows: list[dict], terms: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model in terms:
        for c4_label, style in (("fitted", "-"), ("C4 = 0", ":")):
            pts = [r for r in rows if r["model"] == model and r["term"] == c4_label]
            ax.plot([r["o_metal_nm"] for r in pts], [r["e_ads_eV"] for r in pts], style, color=COLOURS[model],
                    marker="o" if style == "-" else None, ms=3, label=f"{model} {c4_label}")  # fmt: skip
        ax.axhline(terms[model]["target_eV"], color=COLOURS[model], lw=0.6, ls="--")
    ax.set_xlabel("binding O - metal distance (nm), restrained")
    ax.set_ylabel("E_ads (eV)")
    ax.set_title("TFSI- on M2(HCOO)4: fitted 12-6-4 (solid), geometric 12-6 (dotted); targets dashed", fontsize=8)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def plot_poses(terms: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(terms), figsize=(3.3 * len(terms), 6.0))
    for col, (model, term) in enumerate(terms.items()):
        cl = cc.cluster(model)
        xyz = np.vstack([cl.xyz_nm, np.asarray(term["best_tfsi_nm"])])
        atoms = list(cl.topology.atoms())
        elements = [a.element.symbol for a in atoms]
        for row, (i, j, names) in enumerate(((0, 2, "x / z (nm)"), (1, 2, "y / z (nm)"))):
            ax = axes[row][col]
            for a, b in cl.topology.bonds():
                ax.plot(xyz[[a.index, b.index], i], xyz[[a.index, b.index], j], color="k", lw=0.6, zorder=1)
            ax.scatter(xyz[:, i], xyz[:, j], c=[ELEMENT_COLOURS[e] for e in elements],
                       s=[60 if e in ("Fe", "Ni") else 25 for e in elements], edgecolors="k", linewidths=0.3, zorder=2)  # fmt: skip
            ax.set_aspect("equal")
            ax.set_xlabel(names, fontsize=7)
            ax.tick_params(labelsize=6)
            if row == 0:
                ax.set_title(f"{model}: C4 {term['parameters']['c4_kJ_nm4_per_mol']:.4f}, E_ads {term['cluster_e_ads_eV']:.3f} eV,\n"
                             f"M-O {term['o_metal_distance_nm'] * 10:.2f} A", fontsize=7)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--terms", default=str(forcefield_dir() / cc.SHIPPED))
    ap.add_argument("--out", default="docs/calibration")
    args = ap.parse_args(argv)
    out = Path(args.out)
    record = json.loads(Path(args.terms).read_text())
    terms = record["terms"]
    rows, convergence = [], {}
    for model, term in terms.items():
        t0 = time.perf_counter()
        ff = {k: record[k] for k in cc.CHARGE_MODEL} | {"metal_o_tfsi": term.get("other_terms", {})}  # as fitted
        c4 = term["parameters"]["c4_kJ_nm4_per_mol"]
        for label, value in (("fitted", c4), ("C4 = 0", 0.0)):
            for row in curve(model, ff, value, np.asarray(term["best_tfsi_nm"]), term["o_metal_distance_nm"]):
                rows.append(row | {"model": model, "term": label, "c4_kJ_nm4_per_mol": value})
        ev = cc.Evaluator(model, ff)
        seeds = cc.starts(ev.cl)
        energies = [p["e_ads_eV"] if p["bound"] else np.inf for p in (ev.pose(c4, xyz) for _, xyz in seeds)]
        n_list = [n for n in (4, 8, 16, 32, 64, 96) if n < len(seeds)] + [len(seeds)]
        convergence[model] = {
            "n_starts": len(seeds),
            "best_of_first_n_eV": {n: float(min(energies[:n])) for n in n_list},
            "best_of_last_n_eV": {n: float(min(energies[-n:])) for n in n_list},
            "n_bound": int(np.isfinite(energies).sum()),
            "n_within_0.01_eV_of_best": int(np.sum(np.asarray(energies) <= min(energies) + 0.01)),
            "fit_e_ads_eV": term["cluster_e_ads_eV"],
        }
        print(f"{model}: {time.perf_counter() - t0:.0f} s; {convergence[model]}", flush=True)
    keys = ["model", "term", "c4_kJ_nm4_per_mol", "r0_nm", "o_metal_nm", "e_ads_eV", "e_ads_kj_mol"]
    with open(out / "cluster_curves.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out / "cluster_convergence.json").write_text(json.dumps(convergence, indent=1) + "\n")
    plot_curves(rows, terms, out / "cluster_curves.png")
    plot_poses(terms, out / "cluster_poses.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
