"""Time to build a paper-scale CPE-10 box (config/paper.yaml: 50-EO chains, EO:Na 20, 10 wt% Fe-Ni
M3(BTC)2 on [2, 1, 1] cells) and to parametrise it.

Usage: python benchmarks/build_speed.py [start_density_g_cm3] [out_dir]
(default 0.5 g/cm3: the highest start density packmol reaches for these chains in our tests).
"""

import sys
import tempfile
import time
from pathlib import Path

from forcefields.parametrise import parametrise
from systems.build import build_box

SPEC = {"eo_per_chain": 50, "eo_per_na": 20, "mof_wt_percent": 10, "mof_metal": "FeNi", "mof_cells": [2, 1, 1]}
FF = {"charge_scale": 0.8, "nonbonded_cutoff_nm": 1.0, "hydrogen_mass_amu": 1.5, "rigid_mof": True}


def main() -> None:
    density = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="spemd_bench_"))
    t0 = time.perf_counter()
    rec = build_box("CPE-10", SPEC, {"start_density_g_cm3": density, "packing_tolerance_nm": 0.2}, 2025, out / "build", 1.0)
    t1 = time.perf_counter()
    parametrise(out / "build" / "box.pdb", FF, out / "params")
    t2 = time.perf_counter()
    c = rec["counts"]
    print(
        f"CPE-10: {c['atoms']} atoms ({c['peo_chains']} chains, {c['na']} NaTFSI, {c['mof_atoms']} MOF atoms), "
        f"box {' x '.join(f'{x:.2f}' for x in rec['box_nm'])} nm, {rec['mof_wt_percent_achieved']:.2f} wt% MOF"
    )
    print(f"build_box: {t1 - t0:.1f} s   parametrise: {t2 - t1:.1f} s   (start density {density} g/cm3)")


if __name__ == "__main__":
    main()
