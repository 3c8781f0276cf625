"""The cross-system study: all runs' transport.json combined over replicas, figures, and the comparison
with the paper (analysis.paper) and with measured PEO melt densities.

Inputs per run ``results/{system}/rep{r}/{T}K/analysis/transport.json`` (analysis.production), beside it
``rdf_Na-O_TFSI.csv`` and ``msd_{Na,TFSI}.csv``; ``results/{system}/rep{r}/build/composition.json``
(``mof_wt_percent_achieved``, ``mof.metal``, ``counts.na``; without it the config's ``mof_wt_percent``
and ``mof_metal`` are used) and ``results/{system}/rep{r}/{T}K/md/{npt_stage}/state.csv`` (column
"Density (g/mL)"; the second half of the NPT stage is averaged, sigma from 5 blocks).

Replicas: every (value, sigma) pair is combined with analysis.msd.combine_estimates (inverse-variance
weighted mean, sigma scaled by the Birge ratio when replicas scatter more than their error bars); a
quantity without a per-run sigma (each run's own first-shell CN) is the replica mean with its standard error.
The CN comparison uses one radius per temperature for every system (analysis.study_shell: the pooled
g(r)'s first minimum or analysis.shell_radius_nm; none found: verdict withheld, the reason shown);
aggregated.csv gives each point's own mean shell radius, the common one and why either is null. RDF peak
positions carry the histogram resolution (bin width / sqrt 12) in quadrature with the replica error.

Verdicts (every comparison row): a claim is a difference d with uncertainty s (replica-combined, in
quadrature for a difference of two systems). d > 2 s: "yes", d < -2 s: "no", otherwise "inconclusive";
no finite s: "inconclusive". Ordering claims use d = (the paper's larger) - (the paper's smaller);
value claims use d = tolerance - |ours - paper| (the tolerance is stated in the row). Rows our data
cannot give say why, with verdict "not available". Protocol checks close the table (density stopped
drifting, Na+ diffusive); a yes/no claim at a temperature where a check failed becomes "inconclusive",
its note naming the failed check (analysis.study_compare.withhold_failed_verdicts).

Outputs in ``out_dir`` (the list is analysis.study_render.expected_outputs): study.json, aggregated.csv,
comparison.csv, comparison_table.html (fragment), comparison.html (standalone, figures embedded),
figures/{D_vs_wt,sigma_vs_wt,pairing_vs_wt}.{png,svg}, figures/{arrhenius_D,arrhenius_sigma}.* with >= 2
temperatures, figures/{rdf_NaO_TFSI_overlay,msd_overlay}_{T}K.* when a plain electrolyte and an Fe-Ni
composite are both present. analysis.study_render.report_layout says how rules/report.smk files each of them in the
Snakemake report (category, subcategory, caption in report/).

Modules: this one reads the runs, aggregates them and writes the study (run_study, ``spemd study``);
analysis/study_common.py (verdict rule, tolerances, NPT density), study_compare.py (the comparison rows
and protocol checks), study_render.py (figures, tables, report layout), study_shell.py (the common
first-shell radius), study_interface.py (the interface rows).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from spemd.errors import InputError
from spemd.files import write_json_atomic, write_text_atomic
from spemd.provenance import provenance

from spemd.analysis._common import nan_to_none
from spemd.analysis.msd import combine_estimates
from spemd.analysis.paper import PAPER_CITATION
from spemd.analysis.study_common import (ELECTROLYTE_DENSITY_COLUMN, K_SIGMA, QUANTITIES, _finite, _read_csv_columns,
                                         npt_density, pick_systems)
from spemd.analysis.study_compare import comparison_rows
from spemd.analysis.study_interface import interface_rows
from spemd.analysis.study_render import aggregated_csv, make_figures, page_html, rows_csv, table_html
from spemd.analysis.study_shell import common_shells
from spemd.analysis.summary import _get, _identity, read_transport

def _system_meta(system: str, compositions: list[dict], systems_cfg: dict | None) -> dict:
    spec = (systems_cfg or {}).get(system) or {}
    wts = [c.get("mof_wt_percent_achieved") for c in compositions if _finite(c.get("mof_wt_percent_achieved"))]
    nominal = spec.get("mof_wt_percent")
    if nominal is None and compositions:
        nominal = compositions[0].get("mof_wt_percent_requested")
    if wts:
        wt, wt_source = float(np.mean(wts)), "composition.json (achieved)"
    elif nominal is not None:
        wt, wt_source = float(nominal), "config mof_wt_percent (no composition.json)"
    else:
        raise InputError(f"system {system}: no build/composition.json and no systems.{system}.mof_wt_percent "
                         "in the config; the MOF loading is unknown")
    nominal = float(nominal) if nominal is not None else wt
    metal = None
    for c in compositions:
        if isinstance(c.get("mof"), dict) and c["mof"].get("metal"):
            metal = c["mof"]["metal"]
    if metal is None and nominal > 0:
        metal = spec.get("mof_metal", "FeNi")
    salt = [c.get("counts", {}).get("na") for c in compositions]
    has_salt = not (salt and all(s == 0 for s in salt))
    # salt share of the electrolyte (polymer + salt), for the density reference
    known = [c for c in compositions if isinstance(c.get("masses_amu"), dict) and {"salt", "peo"} <= set(c["masses_amu"])
             and (c.get("counts") or {}).get("na")]
    w_salt = [c["masses_amu"]["salt"] / (c["masses_amu"]["salt"] + c["masses_amu"]["peo"]) for c in known]
    m_salt = [c["masses_amu"]["salt"] / c["counts"]["na"] for c in known]
    return {"wt_percent": wt, "wt_percent_nominal": nominal, "wt_source": wt_source,
            "metal": metal if nominal > 0 else None, "has_salt": has_salt,
            "salt_mass_fraction": float(np.mean(w_salt)) if w_salt else None,
            "salt_formula_mass_amu": float(np.mean(m_salt)) if m_salt else None}


def load_runs(transport_paths, npt_stage: str | None = "equilibrate") -> list[dict]:
    """Read every transport.json (+ composition.json, NPT density) into one record per run."""
    runs = []
    for p in transport_paths:
        p = Path(p)
        data = read_transport(p)
        system, replica = _identity(data, p)
        analysis_dir = p.parent
        run_dir = analysis_dir.parent.parent  # results/{system}/rep{r}
        comp_path = run_dir / "build" / "composition.json"
        composition = json.loads(comp_path.read_text()) if comp_path.is_file() else None
        density = None
        if npt_stage:
            state = analysis_dir.parent / "md" / npt_stage / "state.csv"
            if state.is_file():
                density = npt_density(state)
        values = {q: (_get(data, vp), _get(data, sp) if sp else float("nan")) for q, (vp, sp) in QUANTITIES.items()}
        rdf = (data.get("rdf") or {}).get("Na-O_TFSI") or {}
        runs.append({"system": str(system), "replica": replica, "temperature_K": float(data["temperature_K"]),
                     "path": str(p), "analysis_dir": str(analysis_dir), "values": values,
                     "peaks_A": [float(x) for x in rdf.get("peaks_A") or [] if x is not None],
                     "rdf_bin_A": (10.0 * rdf["r_max_nm"] / rdf["bins"]) if rdf.get("r_max_nm") and rdf.get("bins")
                     else float("nan"),
                     "composition": composition, "npt_density": density, "flags": data.get("flags") or [],
                     "film_centre_salt_mass_fraction": _get(data, ("electrolyte", "film_centre_salt_mass_fraction_mean")),
                     "beta_Na": _get(data, ("diffusion", "Na", "beta")),
                     "diffusive_Na": bool(((data.get("diffusion") or {}).get("Na") or {}).get("diffusive")),
                     "beta_flag_Na": ((data.get("diffusion") or {}).get("Na") or {}).get("beta_flag"),
                     "shell": {"radius_nm": _get(data, ("rdf", "Na-O_TFSI", "first_shell_radius_nm")),
                               "radius_A": _get(data, ("rdf", "Na-O_TFSI", "first_shell_radius_A")),
                               "source": rdf.get("first_shell_source"),
                               "reason": rdf.get("first_shell_reason") or (
                                   None if _finite(rdf.get("first_shell_radius_nm")) else "no first shell reported"),
                               "cutoff_A": (data.get("pairing") or {}).get("cutoff_A")}})
    if not runs:
        raise InputError("study: no transport.json given")
    return runs


# ------------------------------------------------------------------------------------ aggregation
def _mean_sem(values) -> dict:
    x = np.asarray([v for v in values if _finite(v)], dtype=float)
    if len(x) == 0:
        return {"mean": float("nan"), "sigma": float("nan"), "n": 0, "method": "no finite values"}
    if len(x) == 1:
        return {"mean": float(x[0]), "sigma": float("nan"), "n": 1, "method": "single replica (no uncertainty)"}
    return {"mean": float(x.mean()), "sigma": float(x.std(ddof=1) / math.sqrt(len(x))), "n": int(len(x)),
            "method": "replica mean and standard error"}


def _peak(runs, index) -> dict:
    vals = [r["peaks_A"][index] for r in runs if len(r["peaks_A"]) > index]
    if not vals:
        return {"mean": float("nan"), "sigma": float("nan"), "n": 0, "method": "no such peak"}
    m = _mean_sem(vals)
    sem = m["sigma"] if _finite(m["sigma"]) else 0.0
    bins = [r["rdf_bin_A"] for r in runs if _finite(r["rdf_bin_A"])]
    res = (max(bins) / math.sqrt(12.0)) if bins else float("nan")
    m["sigma"] = float(math.hypot(sem, res)) if _finite(res) else m["sigma"]
    m["method"] = "replica mean; sigma: replica standard error and histogram resolution (bin/sqrt 12) in quadrature"
    return m


def aggregate(runs: list[dict], systems_cfg: dict | None = None) -> dict:
    """Combine replicas: {'systems': {name: meta}, 'points': {(system, T): {quantity: estimate}}}."""
    systems = {}
    for name in sorted({r["system"] for r in runs}):
        comps = [r["composition"] for r in runs if r["system"] == name and r["composition"]]
        systems[name] = _system_meta(name, comps, systems_cfg)
    points = {}
    for key in sorted({(r["system"], r["temperature_K"]) for r in runs}):
        group = [r for r in runs if (r["system"], r["temperature_K"]) == key]
        point = {"n_replicas": len(group), "replicas": sorted(str(r["replica"]) for r in group)}
        for q, (_, sp) in QUANTITIES.items():
            vals = [r["values"][q][0] for r in group]
            if sp is None:
                point[q] = _mean_sem(vals)
            else:
                point[q] = combine_estimates(vals, [r["values"][q][1] for r in group])
        point["rdf_peak1_A"] = _peak(group, 0)
        point["rdf_peak2_A"] = _peak(group, 1)
        dens = [r["npt_density"] for r in group if r["npt_density"]]
        point["npt_density_is_electrolyte"] = bool(dens) and all(d.get("column") == ELECTROLYTE_DENSITY_COLUMN
                                                                 for d in dens)
        point["npt_density_g_cm3"] = (combine_estimates([d["mean"] for d in dens], [d["sigma"] for d in dens])
                                      if dens else None)
        w_c = [r["film_centre_salt_mass_fraction"] for r in group if _finite(r.get("film_centre_salt_mass_fraction"))]
        point["film_centre_salt_mass_fraction"] = float(np.mean(w_c)) if w_c else None
        point["density_drift"] = {str(r["replica"]): r["npt_density"]["drift"] for r in group
                                  if r["npt_density"] and "drift" in r["npt_density"]}
        point["beta_Na"] = {str(r["replica"]): r.get("beta_Na") for r in group}
        point["diffusive_Na"] = {str(r["replica"]): r.get("diffusive_Na") for r in group}
        point["beta_flag_Na"] = {str(r["replica"]): r.get("beta_flag_Na") for r in group}
        own = [r["shell"]["radius_A"] for r in group if _finite(r["shell"]["radius_A"])
               and not str(r["shell"]["source"] or "").startswith("fallback")]  # the runs' own minima
        point["shell_radius_A"] = float(np.mean(own)) if own else float("nan")
        point["shell_why_null"] = "; ".join(sorted({f"rep{r['replica']}: {r['shell']['reason']}" for r in group
                                                    if r["shell"]["reason"]}))
        points[key] = point
    shells = common_shells(runs, _read_csv_columns)
    for (n, T), point in points.items():
        sh = shells[T]
        point["common_shell_radius_A"] = sh["radius_A"]
        point["common_shell_why_null"] = sh["reason"] or ""
        point["cn_NaO_TFSI_common"] = sh["cn"].get(n, {"mean": float("nan"), "sigma": float("nan"), "n": 0,
                                                        "method": sh["reason"] or "no rdf file"})
    return {"systems": systems, "points": points, "common_shell": {f"{T:g}": sh for T, sh in shells.items()}}


def _jsonable_points(agg):
    return [{"system": n, "temperature_K": T, **p} for (n, T), p in sorted(agg["points"].items())]


def run_study(transport_paths, out_dir, systems_cfg: dict | None = None, npt_stage: str | None = "equilibrate") -> dict:
    """Aggregate, compare and plot (module docstring); returns the study.json record."""
    out_dir = Path(out_dir)
    runs = load_runs(transport_paths, npt_stage=npt_stage)
    agg = aggregate(runs, systems_cfg)
    rows = comparison_rows(agg) + interface_rows(runs, agg)
    fig_paths = make_figures(agg, runs, out_dir / "figures")
    pngs = [p for p in fig_paths if p.suffix == ".png"]
    write_text_atomic(out_dir / "aggregated.csv", aggregated_csv(agg))
    write_text_atomic(out_dir / "comparison.csv", rows_csv(rows))
    write_text_atomic(out_dir / "comparison_table.html", table_html(rows))
    write_text_atomic(out_dir / "comparison.html", page_html(rows, pngs))
    record = nan_to_none({
        "paper": PAPER_CITATION, "systems": agg["systems"], "selection": pick_systems(agg["systems"]),
        "points": _jsonable_points(agg), "comparison": rows, "common_shell": agg["common_shell"],
        "figures": [str(p.relative_to(out_dir)) for p in fig_paths],
        "verdict_rule": f"yes if difference > {K_SIGMA:g} sigma_combined, no if < -{K_SIGMA:g} sigma, else inconclusive",
        "provenance": provenance(config={"systems": systems_cfg, "npt_stage": npt_stage},
                                 inputs=[r["path"] for r in runs]),
    })
    write_json_atomic(out_dir / "study.json", record)
    return record


# ------------------------------------------------------------------------------------------- CLI
def add_study_parser(subparsers):
    """Add ``study`` to an argparse subparsers object; returns the parser."""
    p = subparsers.add_parser("study", help="cross-system study: replicas combined, figures, comparison with the paper",
                              description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (results/study)")
    p.add_argument("--config-json", default=None, help='JSON with the "systems" section (fallback MOF loading/metal)')
    p.add_argument("--npt-stage", default="equilibrate",
                   help="protocol stage whose state.csv gives the NPT density (default: equilibrate)")
    p.add_argument("transport", nargs="+", help="transport.json files of all runs")
    p.set_defaults(func=_cmd_study)
    return p


def _cmd_study(args) -> int:
    systems_cfg = None
    if args.config_json:
        try:
            systems_cfg = json.loads(args.config_json).get("systems")
        except (json.JSONDecodeError, AttributeError):
            raise InputError("--config-json: not a JSON object with a 'systems' section") from None
    rec = run_study(args.transport, args.out, systems_cfg=systems_cfg, npt_stage=args.npt_stage)
    counts = {}
    for r in rec["comparison"]:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    print(f"study: {len(rec['points'])} system/temperature points, {len(rec['comparison'])} comparison rows "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}) -> {args.out}")
    return 0
