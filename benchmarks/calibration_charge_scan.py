"""TFSI- adsorption energy on each MOF model vs the MOF charge scale, at the geometric-mixing pair.

Shows how much of the binding on the capped slab (docs/mof_surface.md) is host-guest Coulomb:
E_ads(mof_charge_scale) from the full Castillo et al. 2008 charges (1.0, the default) down to an almost
uncharged host (0.01), whose value is the Lennard-Jones physisorption of the anion.
E_ads is forcefields.calibration.adsorption_energy_details (best of every start, one CPU thread).

    python benchmarks/calibration_charge_scan.py --metals Fe Ni --scales 1 0.5 0.3 0.2 0.1 0.01 \
        --out results/calibration_charge_scan.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spemd.forcefields.calibration import PAPER_TARGETS_EV, adsorption_energy_details, pair_overrides  # noqa: E402
from spemd.forcefields.library import xml_path  # noqa: E402
from spemd.files import write_json_atomic  # noqa: E402
from spemd.provenance import provenance  # noqa: E402


def scan(metals, scales, charge_scale: float) -> list[dict]:
    rows = []
    for metal in metals:
        for scale in scales:
            ff = {"charge_scale": charge_scale, "mof_charge_scale": scale}
            t0 = time.perf_counter()
            d = adsorption_energy_details(metal, ff, pair_overrides(metal))
            rows.append({
                "metal": metal, "mof_charge_scale": scale, "e_ads_eV": d["e_ads_eV"], "e_ads_kj_mol": d["e_ads_kj_mol"],
                "o_metal_distance_nm": d["best_pose"]["o_metal_distance_nm"], "seconds": time.perf_counter() - t0,
            })
            print(f"{metal:5s} mof_charge_scale {scale:5.2f}  E_ads {d['e_ads_eV']:8.3f} eV  "
                  f"O-metal {d['best_pose']['o_metal_distance_nm']:.3f} nm", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metals", nargs="+", default=["Fe", "Ni"])
    ap.add_argument("--scales", nargs="+", type=float, default=[1.0, 0.5, 0.3, 0.2, 0.1, 0.01])
    ap.add_argument("--charge-scale", type=float, default=0.8, help="forcefield.charge_scale of the ions")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rows = scan(args.metals, args.scales, args.charge_scale)
    record = {
        "what": "E_ads(TFSI-) on an open metal site vs forcefield.mof_charge_scale, geometric-mixing metal-O(TFSI) pair",
        "paper_targets_eV": PAPER_TARGETS_EV,
        "rows": rows,
        "provenance": provenance(config={"metals": args.metals, "scales": args.scales, "charge_scale": args.charge_scale},
                                 forcefield_files=[xml_path(n) for n in ("tfsi.xml", "mof.xml")]),
    }
    write_json_atomic(Path(args.out), record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
