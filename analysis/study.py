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
its note naming the failed check (:func:`withhold_failed_verdicts`).

Outputs in ``out_dir`` (the list is :func:`expected_outputs`): study.json, aggregated.csv,
comparison.csv, comparison_table.html (fragment), comparison.html (standalone, figures embedded),
figures/{D_vs_wt,sigma_vs_wt,pairing_vs_wt}.{png,svg}, figures/{arrhenius_D,arrhenius_sigma}.* with >= 2
temperatures, figures/{rdf_NaO_TFSI_overlay,msd_overlay}_{T}K.* when a plain electrolyte and an Fe-Ni
composite are both present. :func:`report_layout` says how rules/report.smk files each of them in the
Snakemake report (category, subcategory, caption in report/).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from spemd.errors import InputError
from spemd.files import write_json_atomic, write_text_atomic
from spemd.provenance import provenance
from spemd.units import BOLTZMANN_EV_PER_K

from spemd.analysis.msd import combine_estimates
from spemd.analysis.paper import PAPER, PAPER_CITATION, peo_melt_density_g_cm3
from spemd.analysis.study_shell import common_shells
from spemd.analysis.summary import _get, _identity, read_transport
from spemd.analysis.volume import electrolyte_reference_density

K_SIGMA = 2.0
DENSITY_TOLERANCE = 0.03
DRIFT_TOLERANCE = 0.005  # |density drift| across the averaging window, fraction of the mean
PEAK_TOLERANCE_A = 0.3
EA_TOLERANCE_EV = 0.10
SIGMA_30C_FACTOR = 2.0
T_30C_K = 303.15
DENSITY_COLUMN = "Density (g/mL)"
# the electrolyte alone (box minus a MOF slab; pipeline.reporters), preferred where state.csv has it
ELECTROLYTE_DENSITY_COLUMN = "Electrolyte Density (g/mL)"
STEP_COLUMN = "Step"
TIME_COLUMN = "Time (ps)"
TARGET_WT = 10.0

#: combined quantity -> (value path, sigma path or None) in transport.json
QUANTITIES = {
    "D_Na_cm2_per_s": (("diffusion", "Na", "D_cm2_per_s"), ("diffusion", "Na", "D_sigma_cm2_per_s")),
    "D_TFSI_cm2_per_s": (("diffusion", "TFSI", "D_cm2_per_s"), ("diffusion", "TFSI", "D_sigma_cm2_per_s")),
    "sigma_NE_S_per_cm": (("conductivity", "sigma_NE_S_per_cm"), ("conductivity", "sigma_NE_err_S_per_cm")),
    "sigma_EH_S_per_cm": (("conductivity", "sigma_EH_S_per_cm"), ("conductivity", "sigma_EH_err_S_per_cm")),
    "t_plus_ideal": (("conductivity", "t_plus_ideal"), ("conductivity", "t_plus_ideal_err")),
    "t_plus_collective": (("conductivity", "t_plus_collective"), ("conductivity", "t_plus_collective_err")),
    "haven_ratio": (("conductivity", "haven_ratio"), ("conductivity", "haven_ratio_err")),
    "free_Na_fraction": (("pairing", "free_fraction"), ("pairing", "free_fraction_sem")),
    "cn_NaO_TFSI": (("rdf", "Na-O_TFSI", "first_shell_cn"), None),
}

FIGURE_STEMS_ALWAYS = ("D_vs_wt", "sigma_vs_wt", "pairing_vs_wt")
TABLES = ("study.json", "aggregated.csv", "comparison.csv", "comparison_table.html", "comparison.html")


# ----------------------------------------------------------------------------------------- basics
def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating)) and math.isfinite(x)


def verdict(difference: float, sigma: float, k: float = K_SIGMA) -> str:
    """'yes' when difference > k sigma, 'no' when < -k sigma, else 'inconclusive' (module docstring)."""
    if not _finite(difference):
        return "not available"
    if not _finite(sigma) or sigma < 0:
        return "inconclusive"
    if difference > k * sigma:
        return "yes"
    if difference < -k * sigma:
        return "no"
    return "inconclusive"


def difference(a: dict, b: dict) -> tuple[float, float]:
    """(a - b, sqrt(sa^2 + sb^2)) for two {'mean', 'sigma'} estimates."""
    return a["mean"] - b["mean"], float(math.hypot(a["sigma"], b["sigma"]))


def density_check(rho: float, rho_sigma: float, rho_ref: float, tolerance: float = DENSITY_TOLERANCE) -> dict:
    """Deviation of a simulated density from a measured one; flagged when |deviation| > tolerance."""
    dev = (rho - rho_ref) / rho_ref
    margin = tolerance * rho_ref - abs(rho - rho_ref)
    return {"deviation_percent": 100.0 * dev, "flagged": bool(abs(dev) > tolerance),
            "tolerance_percent": 100.0 * tolerance, "verdict": verdict(margin, rho_sigma)}


def _fmt(mean, sigma=None, digits=3) -> str:
    if not _finite(mean):
        return "n/a"
    if sigma is None or not _finite(sigma):
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {sigma:.2g}"


# ----------------------------------------------------------------------------------------- inputs
def _read_csv_columns(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({type(exc).__name__})") from None
    if len(rows) < 2:
        raise InputError(f"{path}: no data rows")
    header = rows[0]
    try:
        data = np.array([[float(x) for x in r] for r in rows[1:] if r], dtype=float)
    except ValueError:
        raise InputError(f"{path}: non-numeric value in the data rows") from None
    return {h: data[:, i] for i, h in enumerate(header)}


def npt_density(state_csv, n_blocks: int = 5, max_step: int | None = None) -> dict:
    """Mean density (g/cm^3) over the second half of an NPT stage's state.csv, sigma from `n_blocks` blocks,
    and whether it has stopped drifting there (:func:`density_drift`). `max_step`: only the rows up to
    that step (the stage as it was then)."""
    cols = _read_csv_columns(Path(state_csv))
    if max_step is not None and STEP_COLUMN in cols:
        keep = cols[STEP_COLUMN] <= max_step
        cols = {k: v[keep] for k, v in cols.items()}
    column = ELECTROLYTE_DENSITY_COLUMN if ELECTROLYTE_DENSITY_COLUMN in cols else DENSITY_COLUMN
    if column not in cols:
        raise InputError(f"{state_csv}: no column {DENSITY_COLUMN!r}; columns: {', '.join(cols)}")
    rho = cols[column]
    time_ps = cols.get(TIME_COLUMN, np.arange(len(rho), dtype=float))
    ok = np.isfinite(rho)
    rho, time_ps = rho[ok], time_ps[ok]
    half, t_half = rho[len(rho) // 2:], time_ps[len(rho) // 2:]
    if len(half) == 0:
        raise InputError(f"{state_csv}: no finite density values")
    nb = min(n_blocks, len(half))
    if nb >= 2:
        blocks = [b.mean() for b in np.array_split(half, nb)]
        sigma = float(np.std(blocks, ddof=1) / math.sqrt(nb))
    else:
        sigma = float("nan")
    return {"mean": float(half.mean()), "sigma": sigma, "n_samples": int(len(half)), "column": column,
            "method": f"mean of the second half of the stage; sigma: standard error of {nb} block means",
            "drift": density_drift(t_half, half, n_blocks)}


def density_drift(time_ps, density, n_blocks: int = 5, tolerance: float = DRIFT_TOLERANCE) -> dict:
    """Linear drift of the density across the averaging window, and whether it has stopped.

    A straight line through the `n_blocks` block means (block-mid times) gives the slope and, from its
    residuals, the slope's standard error (block means are close to independent where single samples
    are not). drift = slope x window length. The density has stopped drifting when
    |drift| < tolerance x mean (verdict "yes" when that margin exceeds K_SIGMA x sigma_drift, "no" when
    the drift exceeds the tolerance by K_SIGMA x sigma_drift, else "inconclusive").
    """
    t, rho = np.asarray(time_ps, float), np.asarray(density, float)
    nb = min(n_blocks, len(rho))
    out = {"tolerance_percent": 100.0 * tolerance, "n_blocks": nb, "window_ps": float(t[-1] - t[0]) if len(t) else 0.0,
           "method": f"least-squares line through {nb} block means of the averaging window; drift = slope x window"}
    if nb < 3 or not out["window_ps"] > 0:
        return out | {"drift_g_cm3": float("nan"), "drift_sigma_g_cm3": float("nan"), "drift_percent": float("nan"),
                      "verdict": "not available"}
    idx = np.array_split(np.arange(len(rho)), nb)
    x = np.array([t[i].mean() for i in idx])
    y = np.array([rho[i].mean() for i in idx])
    A = np.vstack([x - x.mean(), np.ones_like(x)]).T
    (slope, _), *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ np.array([slope, y.mean()])
    slope_sigma = math.sqrt(float(resid @ resid) / (nb - 2) / float(((x - x.mean()) ** 2).sum()))
    drift, drift_sigma = slope * out["window_ps"], slope_sigma * out["window_ps"]
    margin = tolerance * float(rho.mean()) - abs(drift)
    return out | {"drift_g_cm3": float(drift), "drift_sigma_g_cm3": float(drift_sigma),
                  "drift_percent": float(100.0 * drift / rho.mean()), "slope_g_cm3_per_ns": float(slope * 1000.0),
                  "verdict": verdict(margin, drift_sigma)}


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


def pick_systems(systems: dict) -> dict:
    """The plain electrolyte, the Fe-Ni composite nearest 10 wt%, and the 10 wt% Fe-only/Ni-only hosts."""
    plain = sorted([n for n, m in systems.items() if m["wt_percent_nominal"] == 0], key=lambda n: (n != "PEO", n))
    feni = [n for n, m in systems.items() if m["wt_percent_nominal"] > 0 and m["metal"] == "FeNi"]
    comp = sorted(feni, key=lambda n: (abs(systems[n]["wt_percent_nominal"] - TARGET_WT), n))

    def single(metal):
        c = [n for n, m in systems.items() if m["metal"] == metal and m["wt_percent_nominal"] > 0]
        return sorted(c, key=lambda n: (abs(systems[n]["wt_percent_nominal"] - TARGET_WT), n))

    return {"plain": plain[0] if plain else None, "composite": comp[0] if comp else None,
            "Fe": (single("Fe") or [None])[0], "Ni": (single("Ni") or [None])[0]}


# ------------------------------------------------------------------------------------------ rows
def _row(rid, system, T, quantity, paper_text, source, ours, claim, diff=float("nan"), sigma=float("nan"),
         status=None, note=""):
    return {"id": rid, "system": system or "", "temperature_K": T, "quantity": quantity, "paper": paper_text,
            "paper_source": source, "ours": ours, "claim": claim, "difference": diff, "sigma_combined": sigma,
            "verdict": status or verdict(diff, sigma), "note": note}


def _arrhenius_points(points, system, q):
    Ts = sorted(T for (s, T) in points if s == system)
    y = [points[(system, T)][q]["mean"] for T in Ts]
    s = [points[(system, T)][q]["sigma"] for T in Ts]
    ok = [i for i in range(len(Ts)) if _finite(y[i]) and y[i] > 0]
    return [Ts[i] for i in ok], [y[i] for i in ok], [s[i] for i in ok]


def arrhenius_with_prediction(T, y, s, T_target=None) -> dict:
    """analysis.arrhenius.arrhenius_fit plus ln y at `T_target` with its standard error (full covariance)."""
    from spemd.analysis.arrhenius import arrhenius_fit

    fit = arrhenius_fit(T, y, s)
    if T_target is None:
        return fit
    T, y = np.asarray(T, float), np.asarray(y, float)
    s = None if not fit["weighted"] else np.asarray(s, float)
    x, ly = 1.0 / T, np.log(y)
    w = np.ones_like(ly) if s is None else (y / s) ** 2
    A = np.vstack([x, np.ones_like(x)]).T
    cov = np.linalg.inv((A * w[:, None]).T @ A)
    dof = len(T) - 2
    chi2 = float(np.sum(w * (ly - A @ np.array([-fit["Ea_eV"] / BOLTZMANN_EV_PER_K, fit["ln_prefactor"]])) ** 2))
    if s is None:
        cov = cov * (chi2 / dof) if dof > 0 else cov * np.nan
    elif dof > 0 and chi2 / dof > 1:
        cov = cov * (chi2 / dof)
    v = np.array([1.0 / T_target, 1.0])
    ln_pred = fit["ln_prefactor"] - fit["Ea_eV"] / (BOLTZMANN_EV_PER_K * T_target)
    fit["ln_at_target"] = float(ln_pred)
    fit["ln_at_target_err"] = float(np.sqrt(v @ cov @ v))
    fit["target_K"] = float(T_target)
    return fit


def comparison_rows(agg: dict) -> list[dict]:
    """The comparison table (module docstring): one row per claim and temperature."""
    systems, points = agg["systems"], agg["points"]
    pick = pick_systems(systems)
    plain, comp = pick["plain"], pick["composite"]
    temps = sorted({T for (_, T) in points})
    rows = []

    def label(n):
        if n is None:
            return ""
        m = systems[n]
        return f"{n} ({m['wt_percent']:.3g} wt%{' ' + m['metal'] if m['metal'] else ''})"

    stand_in = ""
    if comp is not None and systems[comp]["wt_percent_nominal"] != TARGET_WT:
        stand_in = f"{comp} ({systems[comp]['wt_percent_nominal']:g} wt% Fe-Ni) stands in for CPE-10. "
    missing_pair = "not available: needs a plain electrolyte (0 wt%) and an Fe-Ni composite in the run"

    # RDF peaks
    p = PAPER["rdf_peaks_NaO_TFSI_A"]
    for n in [x for x in (plain, comp) if x]:
        for T in temps:
            if (n, T) not in points:
                continue
            for i, key in enumerate(("rdf_peak1_A", "rdf_peak2_A")):
                e = points[(n, T)][key]
                ref = p["value"][i]
                claim = f"peak {i + 1} within {PEAK_TOLERANCE_A} Å of {ref} Å"
                rid = f"rdf_peak{i + 1}_NaO_TFSI"
                if not _finite(e["mean"]):
                    rows.append(_row(rid, label(n), T, f"Na-O(TFSI) g(r) peak {i + 1} (Å)", p["text"], p["source"],
                                     "not available: no such peak within r_max", claim, status="not available"))
                    continue
                rows.append(_row(rid, label(n), T, f"Na-O(TFSI) g(r) peak {i + 1} (Å)", p["text"], p["source"],
                                 _fmt(e["mean"], e["sigma"]), claim, PEAK_TOLERANCE_A - abs(e["mean"] - ref),
                                 e["sigma"], note=f"n={e['n']} replica(s)"))

    def ordering(rid, quantity, key, paper_entry, bigger, smaller, claim, note="", missing=missing_pair, at=None):
        for T in (temps if at is None else [at]):
            if bigger is None or smaller is None or (bigger, T) not in points or (smaller, T) not in points:
                rows.append(_row(rid, "", T, quantity, paper_entry["text"], paper_entry["source"], missing
                                 if bigger is None or smaller is None else "not available: system missing at this T",
                                 claim, status="not available"))
                continue
            a, b = points[(bigger, T)][key], points[(smaller, T)][key]
            d, s = difference(a, b)
            ours = f"{bigger}: {_fmt(a['mean'], a['sigma'])}; {smaller}: {_fmt(b['mean'], b['sigma'])}"
            rows.append(_row(rid, f"{label(bigger)} vs {label(smaller)}", T, quantity, paper_entry["text"],
                             paper_entry["source"], ours, claim, d, s, note=stand_in + note))

    shells = agg.get("common_shell") or {}
    for T in temps:
        sh = shells.get(f"{T:g}") or {}
        if plain is not None and comp is not None and not _finite(sh.get("radius_A")):
            p = PAPER["cn_NaO_TFSI_trend"]
            rows.append(_row("cn_NaO_TFSI_weaker_with_MOF", f"{label(plain)} vs {label(comp)}", T,
                             "Na-O(TFSI) first-shell CN", p["text"], p["source"],
                             f"not available: no common first shell ({sh.get('reason') or 'no g(r)'})",
                             "CN(plain) > CN(composite)", status="not available",
                             note="verdict withheld: the CNs would be compared at a made-up radius"))
            continue
        ordering("cn_NaO_TFSI_weaker_with_MOF", "Na-O(TFSI) first-shell CN", "cn_NaO_TFSI_common",
                 PAPER["cn_NaO_TFSI_trend"], plain, comp, "CN(plain) > CN(composite)", at=T,
                 note=(f"both at r_c = {sh['radius_A']:.3g} Å ({sh['source']}); errors over ions and replicas"
                       if _finite(sh.get("radius_A")) else ""))
    ordering("D_Na_composite_gt_plain", "D(Na+) (cm²/s)", "D_Na_cm2_per_s", PAPER["D_Na_cm2_per_s"], comp, plain,
             "D(composite) > D(plain)")
    ordering("t_plus_ideal_composite_gt_plain", "t+ (Nernst-Einstein, ideal)", "t_plus_ideal", PAPER["t_plus"],
             comp, plain, "t+(composite) > t+(plain)", "Experimental t+ (paper) vs ideal t+ from D (ours).")
    ordering("t_plus_collective_composite_gt_plain", "t+ (Einstein-Helfand, collective)", "t_plus_collective",
             PAPER["t_plus"], comp, plain, "t+(composite) > t+(plain)")

    # optimum loading among plain + Fe-Ni systems
    p = PAPER["optimum_wt_percent"]
    series = [n for n, m in systems.items() if m["wt_percent_nominal"] == 0 or m["metal"] == "FeNi"]
    at10 = [n for n in series if systems[n]["wt_percent_nominal"] == TARGET_WT]
    for T in temps:
        present = sorted([n for n in series if (n, T) in points and _finite(points[(n, T)]["sigma_NE_S_per_cm"]["mean"])],
                         key=lambda n: (systems[n]["wt_percent_nominal"], n))
        claim = "sigma_NE(10 wt%) > sigma_NE(every other loading)"
        if not at10 or at10[0] not in present or len(present) < 2:
            why = ("not available: no 10 wt% Fe-Ni system in this run" if not at10 or at10[0] not in present
                   else "not available: needs >= 2 loadings")
            loads = ", ".join(f"{systems[n]['wt_percent_nominal']:g}" for n in present)
            rows.append(_row("optimum_loading_10wt", "", T, "loading with the highest sigma_NE (wt%)", p["text"],
                             p["source"], f"{why} (loadings present: {loads or 'none'})", claim,
                             status="not available"))
            continue
        ten = points[(at10[0], T)]["sigma_NE_S_per_cm"]
        others = [n for n in present if n != at10[0]]
        best_other = max(others, key=lambda n: points[(n, T)]["sigma_NE_S_per_cm"]["mean"])
        other = points[(best_other, T)]["sigma_NE_S_per_cm"]
        d, s = difference(ten, other)
        best = max(present, key=lambda n: points[(n, T)]["sigma_NE_S_per_cm"]["mean"])
        ours = (f"highest at {systems[best]['wt_percent_nominal']:g} wt% ({best}); 10 wt%: "
                f"{_fmt(ten['mean'], ten['sigma'])}, best other ({best_other}): {_fmt(other['mean'], other['sigma'])} S/cm")
        loads = ", ".join(f"{systems[n]['wt_percent_nominal']:g}" for n in present)
        rows.append(_row("optimum_loading_10wt", ", ".join(present), T, "loading with the highest sigma_NE (wt%)",
                         p["text"], p["source"], ours, claim, d, s, note=f"loadings: {loads} wt%"))

    # Ea and sigma(30 C) of the composite
    one_T = f"not available: {len(temps)} temperature(s) ({', '.join(f'{t:g}' for t in temps)} K); Ea needs >= 2"
    p = PAPER["Ea_eV"]
    claim = f"|Ea - {p['value']}| < {EA_TOLERANCE_EV} eV"
    fit = None
    if comp is not None:
        T, y, s = _arrhenius_points(points, comp, "sigma_NE_S_per_cm")
        if len(set(T)) >= 2:
            fit = arrhenius_with_prediction(T, y, s, T_30C_K)
    if fit is None:
        rows.append(_row("Ea_sigma_composite", label(comp), None, "Ea of sigma_NE (eV)", p["text"], p["source"],
                         missing_pair if comp is None else one_T, claim, status="not available"))
    else:
        rows.append(_row("Ea_sigma_composite", label(comp), None, "Ea of sigma_NE (eV)", p["text"], p["source"],
                         _fmt(fit["Ea_eV"], fit["Ea_err_eV"]), claim,
                         EA_TOLERANCE_EV - abs(fit["Ea_eV"] - p["value"]), fit["Ea_err_eV"],
                         note=stand_in + f"Arrhenius fit over {fit['n_points']} temperatures."))
    p = PAPER["sigma_30C_S_per_cm"]
    claim = f"within a factor {SIGMA_30C_FACTOR:g} of {p['value']:.3g} S/cm"
    if fit is None:
        rows.append(_row("sigma_30C_composite", label(comp), T_30C_K, "sigma_NE at 30 °C (S/cm)", p["text"],
                         p["source"], missing_pair if comp is None else one_T.replace("Ea needs", "extrapolation needs"),
                         claim, status="not available"))
    else:
        ln10 = math.log(10.0)
        log_ratio = (fit["ln_at_target"] - math.log(p["value"])) / ln10
        rows.append(_row("sigma_30C_composite", label(comp), T_30C_K, "sigma_NE at 30 °C (S/cm)", p["text"],
                         p["source"], _fmt(math.exp(fit["ln_at_target"]),
                                           math.exp(fit["ln_at_target"]) * fit["ln_at_target_err"]),
                         claim, math.log10(SIGMA_30C_FACTOR) - abs(log_ratio), fit["ln_at_target_err"] / ln10,
                         note=stand_in + "Arrhenius extrapolation of MD sigma_NE (charges scaled) to 303 K, where "
                         "real PEO is semicrystalline; difference in log10 units."))

    # Fe-only / Ni-only hosts worse than Fe-Ni
    for metal in ("Fe", "Ni"):
        ordering(f"{metal}_only_below_FeNi", "sigma_NE (S/cm)", "sigma_NE_S_per_cm", PAPER["bimetallic_better"],
                 comp, pick[metal], f"sigma_NE(Fe-Ni) > sigma_NE({metal}-only)",
                 missing=f"not available: needs an Fe-Ni composite and a {metal}-only host in the run")

    rows += density_rows(agg)
    checks = protocol_check_rows(agg)
    return withhold_failed_verdicts(rows, checks) + checks


def withhold_failed_verdicts(rows: list[dict], checks: list[dict]) -> list[dict]:
    """A claim decided on runs that failed a protocol check (density still drifting, Na+ not diffusive)
    is not evidence either way: its yes/no becomes "inconclusive", the note says which check failed."""
    failed = {}
    for c in checks:
        if c["verdict"] == "no":
            failed.setdefault(c["temperature_K"], []).append(f"{c['system']}: {c['id']}")
    for r in rows:
        T = r["temperature_K"]
        why = failed.get(T) if _finite(T) else sorted({f for fs in failed.values() for f in fs})
        if why and r["verdict"] in ("yes", "no"):
            r["note"] = "; ".join(filter(None, [r["note"], f"verdict withheld (was {r['verdict']}): protocol check failed "
                                                f"({', '.join(why)})"]))
            r["verdict"] = "inconclusive"
    return rows


def _worst(verdicts: list[str]) -> str:
    """A check holds for a system only if it holds for every replica."""
    if not verdicts or all(v == "not available" for v in verdicts):
        return "not available"
    for v in ("no", "inconclusive", "not available"):
        if v in verdicts:
            return "inconclusive" if v == "not available" else v
    return "yes"


def protocol_check_rows(agg: dict) -> list[dict]:
    """Checks the paper does not report: did the NPT density stop drifting, and is Na+ diffusive?"""
    rows = []
    for (n, T), point in sorted(agg["points"].items(), key=lambda kv: (kv[0][0], kv[0][1])):
        drifts = point.get("density_drift") or {}
        claim = f"|density drift| over the averaged half of the NPT stage < {100 * DRIFT_TOLERANCE:g} %"
        if drifts:
            ours = "; ".join(f"rep{r}: {d['drift_percent']:+.2f} ± {100 * d['drift_sigma_g_cm3'] / point['npt_density_g_cm3']['mean']:.2f} %"
                             if _finite(d.get("drift_percent")) else f"rep{r}: n/a" for r, d in sorted(drifts.items()))
            rows.append(_row("density_plateau", n, T, "NPT density drift", "not reported", "check", ours, claim,
                             status=_worst([d["verdict"] for d in drifts.values()]),
                             note="line through 5 block means of the second half; every replica must pass"))
        else:
            rows.append(_row("density_plateau", n, T, "NPT density drift", "not reported", "check",
                             "not available: no NPT state.csv for this run", claim, status="not available"))
        betas, ok = point.get("beta_Na") or {}, point.get("diffusive_Na") or {}
        flags = point.get("beta_flag_Na") or {}
        claim = "MSD(Na+) has a window of constant slope (D from the slope; beta is information)"
        ours = "; ".join(f"rep{r}: {'D' if ok.get(r) else 'no D'}, beta {betas[r]:.2f}"
                         + (f" ({flags[r]})" if flags.get(r) else "") for r in sorted(betas) if _finite(betas[r])) or "n/a"
        status = "not available" if not ok else ("yes" if all(ok.values()) else "no")
        rows.append(_row("na_msd_diffusive", n, T, "D(Na+) from a constant-slope MSD window", "not reported", "check",
                         ours, claim, status=status,
                         note="'cage offset': MSD = 6Dt + c with c > 0, beta < 0.9 but D is the slope; without a "
                              "constant slope (sub-diffusive) there is no D"))
    return rows


def density_rows(agg: dict) -> list[dict]:
    """NPT electrolyte density of every system beside a reference that fits its composition.

    Salt-free: the measured PEO melt (analysis.paper). With salt and a known salt mass fraction: the
    volume-additive PEO melt + NaTFSI estimate (analysis.volume.electrolyte_reference_density, flagged
    unverified). A composite is compared by its electrolyte's own density, the film centre's (> 0.6 nm
    beyond the slab), and at the film centre's own salt fraction where transport.json has it: the host
    draws salt to its surface, so the centre holds less than the electrolyte as a whole."""
    rows = []
    for (n, T), point in sorted(agg["points"].items(), key=lambda kv: (kv[0][0], kv[0][1])):
        meta = agg["systems"][n]
        composite = meta["wt_percent_nominal"] > 0
        if composite and not point.get("npt_density_is_electrolyte"):
            continue  # a composite's whole-box density (slab included) has no reference
        w_salt = meta.get("salt_mass_fraction")
        w_centre = point.get("film_centre_salt_mass_fraction") if composite else None
        if w_salt and _finite(w_centre):
            w_salt, w_whole = w_centre, w_salt
        else:
            w_centre = None
        additive = bool(meta["has_salt"] and w_salt)
        ref = (electrolyte_reference_density(T, w_salt, meta["salt_formula_mass_amu"]) if additive
               else peo_melt_density_g_cm3(T))
        claim = f"|rho - rho_exp| < {100 * DENSITY_TOLERANCE:g} %"
        quantity = "NPT density (g/cm³)"
        measured = f"{ref['density_g_cm3']:.4f} g/cm³ ({ref['material']}; {ref['source']})"
        d = point["npt_density_g_cm3"]
        if d is None or not _finite(d["mean"]):
            rows.append(_row("density_vs_measured", n, T, quantity, measured, "experiment",
                             "not available: no NPT state.csv for this run", claim, status="not available"))
            continue
        chk = density_check(d["mean"], d["sigma"], ref["density_g_cm3"])
        notes = [f"deviation {chk['deviation_percent']:+.1f} %" + (" (FLAG: > 3 %)" if chk["flagged"] else "")]
        if ref["extrapolated"]:
            lo, hi = ref["valid_range_K"]
            notes.append(f"correlation extrapolated ({T:g} K outside {lo:g}-{hi:g} K)")
        if additive:
            notes.append(f"reference UNVERIFIED: {ref['model']} ({ref['melt_density_g_cm3']:.4f} g/cm³ melt, "
                         f"{ref['salt_specific_volume_cm3_per_g']:.4f} cm³/g salt)")
        elif meta["has_salt"]:
            notes.append("reference is the salt-free melt; NaTFSI raises the density, so this is not like-for-like")
        if composite:
            notes.append("electrolyte density: the film centre, > 0.6 nm beyond the MOF slab (spemd.analysis.volume)")
        if w_centre is not None:
            notes.append(f"reference at the film centre's salt mass fraction {w_centre:.4f} (production mean), "
                         f"not the whole electrolyte's {w_whole:.4f}")
        row = _row("density_vs_measured", n, T, quantity, measured, "experiment", _fmt(d["mean"], d["sigma"], 4),
                   claim, DENSITY_TOLERANCE * ref["density_g_cm3"] - abs(d["mean"] - ref["density_g_cm3"]),
                   d["sigma"], status=chk["verdict"], note="; ".join(notes))
        row.update({"deviation_percent": chk["deviation_percent"], "flagged": chk["flagged"],
                    "like_for_like": additive or not meta["has_salt"], "reference_verified": ref.get("verified", True),
                    "reference_salt_mass_fraction": w_salt if additive else 0.0})
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------- outputs
def expected_outputs(systems_cfg: dict, temperatures_K) -> list[str]:
    """Files (relative to the study folder) that run_study writes for these configured systems/temperatures."""
    meta = {n: {"wt_percent_nominal": float(s.get("mof_wt_percent", 0) or 0),
                "metal": (s.get("mof_metal", "FeNi") if (s.get("mof_wt_percent", 0) or 0) > 0 else None)}
            for n, s in systems_cfg.items()}
    return list(TABLES) + [f"figures/{stem}.{ext}" for stem in figure_stems(meta, temperatures_K) for ext in ("png", "svg")]


#: figure stem prefix -> (caption stem in report/, report subcategory)
_REPORT_FIGURES = {"D_vs_wt": "Transport vs MOF loading", "sigma_vs_wt": "Transport vs MOF loading",
                   "pairing_vs_wt": "Transport vs MOF loading", "arrhenius_D": "Arrhenius",
                   "arrhenius_sigma": "Arrhenius", "rdf_NaO_TFSI_overlay": "Structure and dynamics",
                   "msd_overlay": "Structure and dynamics"}
_REPORT_TABLES = {"comparison.html": "study_comparison", "comparison.csv": "study_comparison",
                  "aggregated.csv": "study_aggregated"}


def report_layout(systems_cfg: dict, temperatures_K) -> list[dict]:
    """Every expected output with how the Snakemake report shows it (rules/report.smk): name, report
    (bool), caption (file stem in report/), subcategory, labels. PNG figures and the tables are shown."""
    out = []
    for name in expected_outputs(systems_cfg, temperatures_K):
        entry = {"name": name, "report": False, "caption": None, "subcategory": None, "labels": None}
        if name in _REPORT_TABLES:
            entry.update(report=True, caption=_REPORT_TABLES[name], subcategory="Comparison with the paper",
                         labels={"file": name})
        elif name.endswith(".png"):
            stem = name[len("figures/"):-len(".png")]
            kind = next(k for k in _REPORT_FIGURES if stem == k or stem.startswith(k + "_"))
            entry.update(report=True, caption=f"study_{kind}", subcategory=_REPORT_FIGURES[kind],
                         labels={"figure": stem})
        out.append(entry)
    return out


def figure_stems(systems_meta: dict, temperatures_K) -> list[str]:
    stems = list(FIGURE_STEMS_ALWAYS)
    temps = sorted({float(t) for t in temperatures_K})
    if len(temps) >= 2:
        stems += ["arrhenius_D", "arrhenius_sigma"]
    pick = pick_systems(systems_meta)
    if pick["plain"] and pick["composite"]:
        for T in temps:
            stems += [f"rdf_NaO_TFSI_overlay_{T:g}K", f"msd_overlay_{T:g}K"]
    return stems


def _curve_mean(runs, filename, xcol, ycols):
    curves = []
    for r in runs:
        path = Path(r["analysis_dir"]) / filename
        if path.is_file():
            curves.append(_read_csv_columns(path))
    if not curves:
        return None
    x = curves[0][xcol]
    out = {xcol: x}
    for c in ycols:
        ys = [np.interp(x, cur[xcol], cur[c]) for cur in curves if xcol in cur and c in cur]
        out[c] = np.mean(ys, axis=0)
    out["n"] = len(curves)
    return out


def make_figures(agg: dict, runs: list[dict], figures_dir) -> list[Path]:
    """Write the study's figures (module docstring); returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spemd.analysis.plots import _save, plot_msd, plot_rdf

    figures_dir = Path(figures_dir)
    systems, points = agg["systems"], agg["points"]
    temps = sorted({T for (_, T) in points})
    paths = []
    markers = {"FeNi": "o", "Fe": "s", "Ni": "^", "Cu": "D", None: "o"}

    def vs_wt(stem, panels, logy):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
        for ax, (q, ylabel) in zip(axes[0], panels):
            for i, T in enumerate(temps):
                color = f"C{i}"
                main = sorted([n for n, m in systems.items() if (n, T) in points and m["metal"] in (None, "FeNi")],
                              key=lambda n: systems[n]["wt_percent"])
                xs = [systems[n]["wt_percent"] for n in main]
                ys = [points[(n, T)][q]["mean"] for n in main]
                es = [points[(n, T)][q]["sigma"] if _finite(points[(n, T)][q]["sigma"]) else 0.0 for n in main]
                ax.errorbar(xs, ys, yerr=es, fmt="o-", color=color, capsize=3, label=f"{T:g} K Fe-Ni")
                for n, m in systems.items():
                    if m["metal"] not in (None, "FeNi") and (n, T) in points:
                        e = points[(n, T)][q]
                        ax.errorbar([m["wt_percent"]], [e["mean"]], yerr=[e["sigma"] if _finite(e["sigma"]) else 0.0],
                                    fmt=markers.get(m["metal"], "x"), color=color, mfc="none", capsize=3,
                                    label=f"{T:g} K {m['metal']}-only")
            if logy and any(points[k][q]["mean"] > 0 for k in points if _finite(points[k][q]["mean"])):
                ax.set_yscale("log")
            ax.set_xlabel("MOF loading (wt%)")
            ax.set_ylabel(ylabel)
        axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.tight_layout()
        return _save(fig, figures_dir / stem)

    paths += vs_wt("D_vs_wt", [("D_Na_cm2_per_s", "D(Na⁺) (cm²/s)"), ("D_TFSI_cm2_per_s", "D(TFSI⁻) (cm²/s)")], True)
    paths += vs_wt("sigma_vs_wt", [("sigma_NE_S_per_cm", "σ Nernst-Einstein (S/cm)"),
                                   ("sigma_EH_S_per_cm", "σ Einstein-Helfand (S/cm)")], True)
    paths += vs_wt("pairing_vs_wt", [("free_Na_fraction", "free Na⁺ fraction"), ("t_plus_ideal", "t⁺ (ideal, NE)"),
                                     ("t_plus_collective", "t⁺ (collective, EH)")], False)

    if len(temps) >= 2:
        for stem, panels in (("arrhenius_D", [("D_Na_cm2_per_s", "D(Na⁺) (cm²/s)"),
                                              ("D_TFSI_cm2_per_s", "D(TFSI⁻) (cm²/s)")]),
                             ("arrhenius_sigma", [("sigma_NE_S_per_cm", "σ NE (S/cm)"),
                                                  ("sigma_EH_S_per_cm", "σ EH (S/cm)")])):
            fig, axes = plt.subplots(2, 1, figsize=(7.5, 7.0), squeeze=False)
            for ax, (q, ylabel) in zip(axes[:, 0], panels):
                for i, n in enumerate(sorted(systems, key=lambda n: (systems[n]["wt_percent"], n))):
                    T, y, s = _arrhenius_points(points, n, q)
                    if len(set(T)) < 2:
                        continue
                    fit = arrhenius_with_prediction(T, y, s)
                    Ta = np.asarray(T)
                    err = [x if _finite(x) else 0.0 for x in s]
                    lab = f"{n}: Ea = {fit['Ea_eV']:.3f} ± {fit['Ea_err_eV']:.3f} eV"
                    ax.errorbar(1000.0 / Ta, y, yerr=err, fmt="o", color=f"C{i}", capsize=3, label=lab)
                    xx = np.linspace(Ta.min(), Ta.max(), 30)
                    ax.plot(1000.0 / xx, np.exp(fit["ln_prefactor"] - fit["Ea_eV"] / (BOLTZMANN_EV_PER_K * xx)),
                            color=f"C{i}", ls="--", lw=0.8)
                ax.set_yscale("log")
                ax.set_xlabel("1000/T (1/K)")
                ax.set_ylabel(ylabel)
                ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
            fig.tight_layout()
            paths += _save(fig, figures_dir / stem)

    pick = pick_systems(systems)
    if pick["plain"] and pick["composite"]:
        for T in temps:
            rdf_curves, msd_curves = [], []
            for n in (pick["plain"], pick["composite"]):
                group = [r for r in runs if r["system"] == n and r["temperature_K"] == T]
                rc = _curve_mean(group, "rdf_Na-O_TFSI.csv", "r (nm)", ["g(r)", "n(r)"])
                if rc is not None:
                    rdf_curves.append({"r_nm": rc["r (nm)"], "g": rc["g(r)"], "cn": rc["n(r)"],
                                       "label": f"{n} (n={rc['n']})"})
                for sp in ("Na", "TFSI"):
                    mc = _curve_mean(group, f"msd_{sp}.csv", "lag (ps)", ["MSD (nm^2)"])
                    if mc is not None:
                        msd_curves.append({"lag_ps": mc["lag (ps)"], "msd_nm2": mc["MSD (nm^2)"],
                                           "label": f"{sp}, {n}"})
            if not rdf_curves or not msd_curves:
                raise InputError(f"study: rdf_Na-O_TFSI.csv / msd_*.csv missing for {pick['plain']} or "
                                 f"{pick['composite']} at {T:g} K")
            paths += plot_rdf(rdf_curves, figures_dir / f"rdf_NaO_TFSI_overlay_{T:g}K",
                              title=f"Na-O(TFSI), {T:g} K, replica mean")
            paths += plot_msd(msd_curves, figures_dir / f"msd_overlay_{T:g}K", title=f"{T:g} K, replica mean")
    return paths


_CSV_FIELDS = ("id", "system", "temperature_K", "quantity", "paper", "paper_source", "ours", "claim", "difference",
               "sigma_combined", "verdict", "note")


def _cell(v):
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return "" if v is None else str(v)


def rows_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in _CSV_FIELDS})
    return buf.getvalue()


def aggregated_csv(agg) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    qs = list(QUANTITIES) + ["rdf_peak1_A", "rdf_peak2_A"]
    header = ["system", "temperature_K", "mof_wt_percent", "mof_metal", "n_replicas"]
    for q in qs + ["npt_density_g_cm3", "cn_NaO_TFSI_common"]:
        header += [q, f"{q}_sigma"]
    header += ["NaO_TFSI_shell_radius_A", "NaO_TFSI_shell_why_null", "NaO_TFSI_common_shell_radius_A",
               "NaO_TFSI_common_shell_why_null"]
    w.writerow(header)
    for (n, T), p in sorted(agg["points"].items()):
        m = agg["systems"][n]
        row = [n, f"{T:g}", f"{m['wt_percent']:.4g}", m["metal"] or "", p["n_replicas"]]
        for q in qs:
            row += [_cell(p[q]["mean"]), _cell(p[q]["sigma"])]
        d = p["npt_density_g_cm3"]
        row += [_cell(d["mean"]), _cell(d["sigma"])] if d else ["", ""]
        c = p["cn_NaO_TFSI_common"]
        row += [_cell(c["mean"]), _cell(c["sigma"]), _cell(p["shell_radius_A"]), p["shell_why_null"],
                _cell(p["common_shell_radius_A"]), p["common_shell_why_null"]]
        w.writerow(row)
    return buf.getvalue()


def table_html(rows) -> str:
    """The comparison table as an HTML fragment (<table id="comparison">)."""
    cols = ("quantity", "system", "temperature_K", "paper", "paper_source", "ours", "claim", "verdict", "note")
    heads = ("Quantity", "System(s)", "T (K)", "Paper", "Paper's source", "Ours (± 1σ)", "Claim tested",
             "Reproduced?", "Note")
    out = ['<table id="comparison" class="comparison">', "<thead><tr>" +
           "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead>", "<tbody>"]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            text = f"{v:g}" if isinstance(v, float) and math.isfinite(v) else ("" if v is None else str(v))
            cls = f' class="verdict-{r["verdict"].replace(" ", "-")}"' if c == "verdict" else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        out.append(f'<tr data-row-id="{html.escape(r["id"])}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out) + "\n"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1400px; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.45em; vertical-align: top; }}
th {{ background: #eee; }}
.verdict-yes {{ background: #d8f0d8; }} .verdict-no {{ background: #f6d6d6; }}
.verdict-inconclusive {{ background: #fff3c4; }} .verdict-not-available {{ color: #777; }}
figure {{ display: inline-block; margin: 0.5em; }} figure img {{ max-width: 640px; }}
#figure-errors {{ color: #a00; }}
</style></head><body>
<h1>{title}</h1>
<p>Our MD numbers (replicas combined, ± 1 standard error) beside {citation}. A claim is reproduced
("yes") when the difference exceeds 2 combined standard errors in the paper's direction, not reproduced
("no") when it exceeds 2 in the other direction, inconclusive otherwise. Experimental numbers of the
paper are compared as trends.</p>
<h2>Comparison with the paper and with measured densities</h2>
{table}
<h2>Figures</h2>
<p id="figure-errors"></p>
{figures}
<script>
// Mark every figure with its decoded size; list any that failed to load.
window.addEventListener("load", function () {{
  var bad = [];
  document.querySelectorAll("img").forEach(function (img) {{
    img.setAttribute("data-natural-width", String(img.naturalWidth));
    if (!(img.complete && img.naturalWidth > 0)) {{ bad.push(img.alt); }}
  }});
  document.body.setAttribute("data-figures-checked", String(document.images.length));
  if (bad.length) {{ document.getElementById("figure-errors").textContent = "Figures that failed to load: " + bad.join(", "); }}
}});
</script>
</body></html>
"""


def page_html(rows, figure_pngs, title="spemd study: comparison with Dong et al. 2025") -> str:
    """Standalone HTML: the comparison table and every PNG figure embedded as a data URI."""
    figs = []
    for p in figure_pngs:
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        name = html.escape(Path(p).stem)
        figs.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption>'
                    "</figure>")
    return _PAGE.format(title=html.escape(title), citation=html.escape(PAPER_CITATION), table=table_html(rows),
                        figures="\n".join(figs))


def _jsonable_points(agg):
    return [{"system": n, "temperature_K": T, **p} for (n, T), p in sorted(agg["points"].items())]


def run_study(transport_paths, out_dir, systems_cfg: dict | None = None, npt_stage: str | None = "equilibrate") -> dict:
    """Aggregate, compare and plot (module docstring); returns the study.json record."""
    out_dir = Path(out_dir)
    runs = load_runs(transport_paths, npt_stage=npt_stage)
    agg = aggregate(runs, systems_cfg)
    from spemd.analysis.study_interface import interface_rows  # here: study_interface imports this module

    rows = comparison_rows(agg) + interface_rows(runs, agg)
    fig_paths = make_figures(agg, runs, out_dir / "figures")
    pngs = [p for p in fig_paths if p.suffix == ".png"]
    write_text_atomic(out_dir / "aggregated.csv", aggregated_csv(agg))
    write_text_atomic(out_dir / "comparison.csv", rows_csv(rows))
    write_text_atomic(out_dir / "comparison_table.html", table_html(rows))
    write_text_atomic(out_dir / "comparison.html", page_html(rows, pngs))
    from spemd.analysis._common import nan_to_none

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
