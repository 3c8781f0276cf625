"""Convergence of the TFSI- adsorption energy with the number of systematic starts (docs/calibration.md).

Minimises every systematic start of forcefields.calibration (conformers x binding O x O->S directions x
rotations, clashing starts dropped) on one model at one metal-O(TFSI) pair and writes one CSV row per
start (label, E_ads, binding distance, seconds), plus best-of-N for nested subsets in start order.

    python benchmarks/calibration_starts.py --metal Fe --n-rotations 3 --out docs/calibration/starts_Fe.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spemd.forcefields import calibration as cal  # noqa: E402
from spemd.units import KJ_PER_MOL_PER_EV  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metal", default="Fe")
    ap.add_argument("--n-rotations", type=int, default=cal.N_ROTATIONS)
    ap.add_argument("--sigma-nm", type=float, default=None, help="pair sigma (default geometric)")
    ap.add_argument("--charge-scale", type=float, default=0.8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    ff = {"charge_scale": args.charge_scale}
    overrides = cal.pair_overrides(args.metal, sigma_nm=args.sigma_nm)
    setup = cal._setup(args.metal, ff, overrides, cal.VACUUM_NM, "CPU")
    e_far = cal._far_energy(setup)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "e_ads_eV", "o_metal_nm", "bound", "seconds"])
        for _, label, xyz in cal._bound_starts(setup.model, args.n_rotations):
            t0 = time.perf_counter()
            energy, _, d = cal._bound_pose(setup, xyz)
            e = (energy - e_far) / KJ_PER_MOL_PER_EV
            w.writerow([label, f"{e:.5f}", f"{d:.4f}", int(d <= setup.bound_nm), f"{time.perf_counter() - t0:.2f}"])
            fh.flush()
            print(f"{label:40s} {e:8.4f} eV  {d:.3f} nm  {time.perf_counter() - t0:5.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
