"""analysis.study_interface on synthetic interface.json files beside synthetic transport.json files."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from spemd.analysis.study import aggregate, load_runs, run_study
from spemd.analysis.study_interface import interface_rows
from study_synthetic import transport_record, write_run

T = 353.0


def _interface(free, free_sem, occupancy=None):
    """The keys of interface.json that the study reads (analysis/interface.py writes them)."""
    sites = None
    if occupancy is not None:  # {site type: (n_sites, fraction, sem)}
        sites = {t: {"n_sites": n, "occupancy": {"O_TFSI": f}, "occupancy_sem": {"O_TFSI": e}}
                 for t, (n, f, e) in occupancy.items()}
    return {"speciation": {"free_tfsi_fraction": free, "free_tfsi_fraction_sem": free_sem},
            "open_sites": None if sites is None else {"site_types": sites}}


def _study(tmp_path, systems):
    paths = []
    for name, wt, metal, reps in systems:
        for rep, iface in enumerate(reps):
            p = write_run(tmp_path, name, rep, T, transport_record(name, rep, T, D_Na=1e-7, D_Na_sigma=1e-8),
                          wt=wt, metal=metal)
            if iface is not None:
                (Path(p).parent / "interface.json").write_text(json.dumps(iface))
            paths.append(p)
    return paths


def _row(rows, rid):
    found = [r for r in rows if r["id"] == rid]
    assert len(found) == 1, (rid, found)
    return found[0]


def test_free_anion_rows_and_site_orderings(tmp_path):
    feni = {"Fe(FeNi)": (8, 0.5, 0.02), "Ni(FeNi)": (8, 0.3, 0.02)}  # site-weighted 0.4 +- 0.01414
    paths = _study(tmp_path, [
        ("PEO", 0, None, [_interface(0.60, 0.02), _interface(0.64, 0.02)]),  # 0.62 +- 0.02 (Birge ratio sqrt 2)
        ("CPE-10", 10, "FeNi", [_interface(0.80, 0.03, feni)]),
        ("CPE-10-Fe", 10, "Fe", [_interface(0.70, 0.03, {"Fe": (16, 0.2, 0.01)})]),
        ("CPE-10-Ni", 10, "Ni", [_interface(0.70, 0.03, {"Ni": (16, 0.39, 0.01)})]),
    ])
    runs = load_runs(paths, npt_stage=None)
    rows = interface_rows(runs, aggregate(runs))
    beside = [r for r in rows if r["id"] == "free_tfsi_fraction"]
    assert {r["system"] for r in beside} == {"PEO", "CPE-10"}
    assert all(r["paper_source"] == "experiment" and "66.8 %" in r["paper"] and r["verdict"] == "not tested"
               for r in beside)
    order = _row(rows, "free_tfsi_composite_gt_plain")
    assert order["difference"] == pytest.approx(0.80 - 0.62)
    assert order["sigma_combined"] == pytest.approx(math.hypot(0.03, 0.02 / math.sqrt(2) * math.sqrt(2)))
    assert order["verdict"] == "yes"
    fe = _row(rows, "open_site_occupancy_FeNi_gt_Fe")
    assert fe["difference"] == pytest.approx(0.2) and fe["verdict"] == "yes"
    ni = _row(rows, "open_site_occupancy_FeNi_gt_Ni")  # 0.4 - 0.39 within its errors
    assert ni["difference"] == pytest.approx(0.01)
    assert ni["sigma_combined"] == pytest.approx(math.hypot(0.02 / math.sqrt(2), 0.01))
    assert ni["verdict"] == "inconclusive"


def test_no_interface_files_add_no_rows_and_run_study_carries_them(tmp_path):
    paths = _study(tmp_path, [("PEO", 0, None, [None]), ("CPE-10", 10, "FeNi", [None])])
    runs = load_runs(paths, npt_stage=None)
    assert interface_rows(runs, aggregate(runs)) == []
    paths = _study(tmp_path / "with", [("PEO", 0, None, [_interface(0.6, 0.01)]),
                                       ("CPE-10", 10, "FeNi", [_interface(0.9, 0.01)])])
    rec = run_study(paths, tmp_path / "study", npt_stage=None)
    assert _row(rec["comparison"], "free_tfsi_composite_gt_plain")["verdict"] == "yes"


def test_free_anions_compared_at_the_common_radius_from_the_curves(tmp_path):
    # interface.json holds fractions at each run's own radius (0.62, 0.80); the curves give them at any
    # cutoff: the study must read both systems at the one pooled radius (~3.1 A here), not take the records
    paths = _study(tmp_path, [("PEO", 0, None, [_interface(0.62, 0.02)]),
                              ("CPE-10", 10, "FeNi", [_interface(0.80, 0.03)])])
    grid = np.round(np.arange(0.25, 0.4501, 0.005), 4)
    lines = {"PEO": 0.9 - 2.0 * (grid - 0.25), "CPE-10": 0.95 - 1.0 * (grid - 0.25)}
    for p in paths:
        name = Path(p).parents[3].name
        text = "cutoff (nm),free Na+ fraction,free Na+ fraction SEM,free TFSI- fraction,free TFSI- fraction SEM\n"
        text += "".join(f"{r},0.5,0.01,{f},0.01\n" for r, f in zip(grid, lines[name]))
        (Path(p).parent / "speciation_free_vs_cutoff.csv").write_text(text)
    runs = load_runs(paths, npt_stage=None)
    agg = aggregate(runs)
    sh = agg["common_shell"]["353"]
    rc = sh["radius_nm"]
    assert 0.29 <= rc <= 0.33, sh
    assert sh["free_TFSI"]["PEO"]["mean"] == pytest.approx(0.9 - 2.0 * (rc - 0.25))
    assert sh["free_Na"]["CPE-10"]["mean"] == pytest.approx(0.5)
    rows = interface_rows(runs, agg)
    order = _row(rows, "free_tfsi_composite_gt_plain")
    assert order["difference"] == pytest.approx((0.95 - (rc - 0.25)) - (0.9 - 2.0 * (rc - 0.25)))
    assert order["sigma_combined"] == pytest.approx(math.hypot(0.01, 0.01))
    beside = [r for r in rows if r["id"] == "free_tfsi_fraction"]
    assert all("common radius" in r["note"] for r in beside)
