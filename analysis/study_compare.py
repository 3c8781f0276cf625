"""The study's comparison with the paper: one row per claim checked (comparison_rows), the protocol
checks that close the table (protocol_check_rows, density_rows), and the rule that withholds a yes/no
verdict at a temperature where a check failed (withhold_failed_verdicts). The verdict rule and its
tolerances: analysis/study_common.py; the rows' columns: docs/outputs.md, comparison.csv.
"""

from __future__ import annotations

import math

import numpy as np

from spemd.units import BOLTZMANN_EV_PER_K

from spemd.analysis.paper import PAPER, peo_melt_density_g_cm3
from spemd.analysis.study_common import (DENSITY_TOLERANCE, DRIFT_TOLERANCE, EA_TOLERANCE_EV, PEAK_TOLERANCE_A,
                                         SIGMA_30C_FACTOR, T_30C_K, TARGET_WT, _finite, _fmt, density_check,
                                         difference, pick_systems, verdict)
from spemd.analysis.volume import electrolyte_reference_density

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
