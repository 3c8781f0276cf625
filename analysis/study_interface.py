"""The study's rows from the interface analysis (interface.json beside each transport.json).

- ``free_tfsi_fraction``: per system and temperature, the free-TFSI- fraction (analysis/speciation.py)
  set beside the paper's Raman numbers (66.8 % PEO, 87.7 % CPE-10). Raman counts free anions by their
  band, ours geometrically (no Na+ within the Na-O(TFSI) shell): experiment, so the row is "not tested".
  Read at the temperature's common radius (analysis/study_shell.py) where the runs wrote their
  free-vs-cutoff curves, so that systems are compared at one cutoff; else at each run's own radius.
- ``free_tfsi_composite_gt_plain``: the ordering the paper's numbers imply, decided as the study decides
  every ordering (analysis/study.py: yes when the difference exceeds K_SIGMA combined sigmas).
- ``open_site_occupancy_FeNi_gt_<metal>``: the TFSI- O occupancy of the surface open sites (all site types,
  weighted by their number of sites) of the Fe-Ni composite against the Fe-only and Ni-only hosts, the
  paper's mechanism for its (experimental) bimetallic advantage.

Replicas combine with analysis.msd.combine_estimates, as every study quantity does; yes/no verdicts are
withheld when a protocol check of that temperature failed (analysis.study.withhold_failed_verdicts).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spemd.analysis.msd import combine_estimates
from spemd.analysis.paper import PAPER
from spemd.analysis.study_common import _fmt, difference, pick_systems
from spemd.analysis.study_compare import _row, protocol_check_rows, withhold_failed_verdicts


def _interface_values(run) -> dict | None:
    path = Path(run["analysis_dir"]) / "interface.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    sp = data.get("speciation") or {}
    out = {"free_tfsi": (sp.get("free_tfsi_fraction"), sp.get("free_tfsi_fraction_sem"))}
    types = ((data.get("open_sites") or {}).get("site_types") or {}).values()
    occ = [(t["n_sites"], t["occupancy"]["O_TFSI"], t["occupancy_sem"]["O_TFSI"]) for t in types
           if t.get("occupancy") and t["occupancy"].get("O_TFSI") is not None]
    if occ:
        n = np.array([o[0] for o in occ], dtype=float)
        f = np.array([o[1] for o in occ], dtype=float)
        e = np.array([np.nan if o[2] is None else o[2] for o in occ], dtype=float)
        out["occupancy_O_TFSI"] = (float(n @ f / n.sum()), float(np.sqrt(np.sum((n * e) ** 2)) / n.sum()))
    return out


def _estimates(runs) -> dict:
    """{(system, T): {quantity: combined estimate}} from the runs' interface.json files."""
    by_point = {}
    for run in runs:
        vals = _interface_values(run)
        if vals is not None:
            by_point.setdefault((run["system"], run["temperature_K"]), []).append(vals)
    out = {}
    for key, group in by_point.items():
        out[key] = {}
        for q in ("free_tfsi", "occupancy_O_TFSI"):
            pairs = [g[q] for g in group if q in g and g[q][0] is not None]
            if pairs:
                out[key][q] = combine_estimates([p[0] for p in pairs],
                                                [np.nan if p[1] is None else p[1] for p in pairs])
    return out


def interface_rows(runs: list[dict], agg: dict) -> list[dict]:
    """The rows of the module docstring; none when no run has an interface.json."""
    est = _estimates(runs)
    if not est:
        return []
    for (n, T), q in est.items():  # free anions at the temperature's common radius (analysis/study_shell.py)
        sh = agg.get("common_shell", {}).get(f"{T:g}") or {}
        common = (sh.get("free_TFSI") or {}).get(n)
        if common is not None and np.isfinite(common["mean"]):
            q["free_tfsi"] = {**common, "radius_A": sh["radius_A"]}
    pick = pick_systems(agg["systems"])
    temps = sorted({T for (_, T) in agg["points"]})
    raman = PAPER["free_tfsi_fraction"]
    bimetallic = PAPER["bimetallic_better"]
    rows = []
    for n in [x for x in (pick["plain"], pick["composite"]) if x]:
        for T in temps:
            e = est.get((n, T), {}).get("free_tfsi")
            if e is None:
                continue
            rows.append(_row("free_tfsi_fraction", n, T, "free TFSI- fraction (no Na+ within the Na-O(TFSI) shell)",
                             raman["text"], raman["source"], _fmt(e["mean"], e["sigma"]),
                             "set beside the Raman value (a different measure)", status="not tested",
                             note=f"n={e['n']} replica(s); " + (
                                 f"at the common radius {e['radius_A']:.3g} A" if "radius_A" in e
                                 else "at each run's own shell radius")))

    def ordering(rid, quantity, q, paper_entry, bigger, smaller, claim):
        for T in temps:
            a = est.get((bigger, T), {}).get(q) if bigger else None
            b = est.get((smaller, T), {}).get(q) if smaller else None
            if a is None or b is None:
                rows.append(_row(rid, "", T, quantity, paper_entry["text"], paper_entry["source"],
                                 "not available: needs this number from both systems' interface.json at this T "
                                 "(it is null where no first shell or no open-site radius was found)", claim,
                                 status="not available"))
                continue
            d, s = difference(a, b)
            rows.append(_row(rid, f"{bigger} vs {smaller}", T, quantity, paper_entry["text"], paper_entry["source"],
                             f"{bigger}: {_fmt(a['mean'], a['sigma'])}; {smaller}: {_fmt(b['mean'], b['sigma'])}",
                             claim, d, s))

    ordering("free_tfsi_composite_gt_plain", "free TFSI- fraction", "free_tfsi", raman, pick["composite"],
             pick["plain"], "free TFSI-(composite) > free TFSI-(plain)")
    for metal in ("Fe", "Ni"):
        if pick[metal] is not None:
            ordering(f"open_site_occupancy_FeNi_gt_{metal}", "TFSI- O occupancy of surface open sites",
                     "occupancy_O_TFSI", bimetallic, pick["composite"], pick[metal],
                     f"occupancy(Fe-Ni) > occupancy({metal}-only)")
    return withhold_failed_verdicts(rows, protocol_check_rows(agg))
