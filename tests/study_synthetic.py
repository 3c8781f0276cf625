"""Synthetic workflow results for the study tests: transport.json files with exactly the structure that
analysis.production writes, composition.json, NPT state.csv, rdf/msd CSVs, under results/{system}/rep{r}/."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from spemd.units import BOLTZMANN_EV_PER_K, cm2_per_s_to_nm2_per_ps

#: every row id of analysis.study's comparison table (claims of the paper, then our own protocol checks)
CLAIM_IDS = {"rdf_peak1_NaO_TFSI", "rdf_peak2_NaO_TFSI", "cn_NaO_TFSI_weaker_with_MOF", "D_Na_composite_gt_plain",
             "t_plus_ideal_composite_gt_plain", "t_plus_collective_composite_gt_plain", "optimum_loading_10wt",
             "Ea_sigma_composite", "sigma_30C_composite", "Fe_only_below_FeNi", "Ni_only_below_FeNi",
             "density_vs_measured", "density_plateau", "na_msd_diffusive"}

FIT_DEFAULTS = {"beta": 1.0, "beta_range": [0.95, 1.05], "beta_ok": True, "beta_tolerance": 0.1, "diffusive": True,
                "no_window_reason": None, "fit_window_ps": [10.0, 50.0], "search_window_ps": [10.0, 50.0],
                "window_selection": "local beta rule", "fit_chi2_per_dof": 1.0,
                "uncertainty_method": "GLS of the whole-trajectory MSD", "dimension": 3, "max_step_fraction": 0.1}


def _diffusion(D_cm2, sD_cm2, n):
    D, sD = cm2_per_s_to_nm2_per_ps(D_cm2), cm2_per_s_to_nm2_per_ps(sD_cm2)
    return {"D_nm2_per_ps": D, "D_sigma_nm2_per_ps": sD, "D_cm2_per_s": D_cm2, "D_sigma_cm2_per_s": sD_cm2,
            "n_particles": n, **FIT_DEFAULTS}


def transport_record(system, replica, T, *, D_Na, D_Na_sigma, D_TFSI=None, D_TFSI_sigma=None, sigma_NE=1e-4,
                     sigma_NE_err=1e-6, sigma_EH=None, sigma_EH_err=None, t_plus=0.3, t_plus_err=0.01,
                     t_plus_coll=None, t_plus_coll_err=None, cn=4.0, free=0.4, free_sem=0.02,
                     peaks_A=(2.3, 4.5), r_max_nm=0.8, bins=80) -> dict:
    """The dict analysis.production.analyse_production returns (and writes as transport.json)."""
    D_TFSI = D_Na if D_TFSI is None else D_TFSI
    D_TFSI_sigma = D_Na_sigma if D_TFSI_sigma is None else D_TFSI_sigma
    sigma_EH = sigma_NE if sigma_EH is None else sigma_EH
    sigma_EH_err = sigma_NE_err if sigma_EH_err is None else sigma_EH_err
    t_plus_coll = t_plus if t_plus_coll is None else t_plus_coll
    t_plus_coll_err = t_plus_err if t_plus_coll_err is None else t_plus_coll_err
    rdf = {}
    for name in ("Na-O_TFSI", "Na-O_ether", "Na-N_TFSI", "Na-Na"):
        rdf[name] = {"selection_a": "resname NA", "selection_b": "x", "r_max_nm": r_max_nm, "bins": bins,
                     "normalisation": "per-frame box volume", "peaks_A": list(peaks_A), "first_peak_A": peaks_A[0],
                     "first_shell_radius_nm": 0.31, "first_shell_radius_A": 3.1, "first_shell_cn": cn}
    return {
        "system": system, "replica": replica, "temperature_K": float(T), "charge_scale": 0.8, "n_frames": 50,
        "dt_ps": 0.2, "time_span_ps": 9.8, "mean_volume_nm3": 30.0, "n_ions": {"Na": 6, "TFSI": 6},
        "diffusion": {"Na": _diffusion(D_Na, D_Na_sigma, 6), "TFSI": _diffusion(D_TFSI, D_TFSI_sigma, 6)},
        "conductivity": {
            "sigma_NE_S_per_cm": sigma_NE, "sigma_NE_err_S_per_cm": sigma_NE_err,
            "sigma_EH_S_per_cm": sigma_EH, "sigma_EH_err_S_per_cm": sigma_EH_err,
            "sigma_plus_plus_S_per_cm": sigma_EH / 2, "sigma_minus_minus_S_per_cm": sigma_EH / 2,
            "sigma_plus_minus_S_per_cm": 0.0, "t_plus_ideal": t_plus, "t_plus_ideal_err": t_plus_err,
            "t_plus_collective": t_plus_coll, "t_plus_collective_err": t_plus_coll_err, "haven_ratio": 1.0, "haven_ratio_err": 0.1,
            "EH_diffusive": True, "EH_no_window_reason": None, "beta_M": [1.0, 1.0, 1.0],
            "charge_scale": 0.8, "sigma_NE_uncertainty_method": "first-order propagation of sigma_D",
            "sigma_EH_uncertainty_method": "least-squares slopes, joint Gaussian covariance", "fit_window_ps": [1.0, 5.0]},
        "rdf": rdf,
        "pairing": {"free_fraction": free, "free_fraction_sem": free_sem, "cip_fraction": 1 - free,
                    "cip_fraction_sem": free_sem, "agg_fraction": 0.0, "agg_fraction_sem": 0.0,
                    "mean_bound_oxygens": 1.0, "cutoff_nm": 0.31, "classification": "by bound TFSI count",
                    "cutoff_A": 3.1, "tau_continuous_ps": 5.0, "tau_intermittent_ps": 9.0,
                    "tau_continuous_lower_bound": False, "tau_intermittent_lower_bound": False,
                    "residence_definition": "x"},
        "flags": [],
        "provenance": {"created_utc": "2025-01-01T00:00:00+00:00", "inputs": {}},
    }


def write_run(root, system, replica, T, record, *, wt=None, metal=None, density=None, npt_stage="equilibrate",
              rdf_shift_nm=0.0, msd_slope=6e-3):
    """Write one run's files under root/results; returns the transport.json path."""
    run = Path(root) / "results" / system / f"rep{replica}"
    analysis = run / f"{T:g}K" / "analysis"
    analysis.mkdir(parents=True, exist_ok=True)
    p = analysis / "transport.json"
    p.write_text(json.dumps(record))
    if wt is not None:
        (run / "build").mkdir(parents=True, exist_ok=True)
        comp = {"system": system, "seed": 1, "counts": {"na": 6, "tfsi": 6}, "mof_wt_percent_requested": wt,
                "mof_wt_percent_achieved": wt, "has_mof_slab": wt > 0,
                "mof": {"metal": metal, "cells": [1, 1, 1]} if wt > 0 else None}
        (run / "build" / "composition.json").write_text(json.dumps(comp))
    if density is not None:
        md = run / f"{T:g}K" / "md" / npt_stage
        md.mkdir(parents=True, exist_ok=True)
        with open(md / "state.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["Time (ps)", "Step", "Density (g/mL)"])
            for i, rho in enumerate(density):
                w.writerow([i * 1.0, i * 250, rho])
    # a first peak at 2.3 A and a minimum at 3.1 A; n(r) (at the bins' upper edges) is the record's CN there
    r = np.linspace(0.01, 0.8, 80)
    g = 1 + 3 * np.exp(-((r - 0.23 - rdf_shift_nm) / 0.02) ** 2) - 0.6 * np.exp(-((r - 0.31) / 0.03) ** 2)
    n = np.cumsum(g * r**2)
    n *= record["rdf"]["Na-O_TFSI"]["first_shell_cn"] / np.interp(0.31, r + 0.005, n)
    with open(analysis / "rdf_Na-O_TFSI.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["r (nm)", "g(r)", "n(r)"])
        for a, b, c in zip(r, g, n):
            w.writerow([a, b, c])
    t = np.arange(50) * 0.2
    for sp in ("Na", "TFSI"):
        with open(analysis / f"msd_{sp}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["lag (ps)", "MSD (nm^2)"])
            for a, b in zip(t, msd_slope * t):
                w.writerow([a, b])
    return p


def arrhenius(T, prefactor, Ea_eV):
    return prefactor * math.exp(-Ea_eV / (BOLTZMANN_EV_PER_K * T))


def write_paper_like_study(root, temperatures=(333.0, 353.0, 373.0, 393.0), replicas=2, Ea_eV=0.35):
    """A full paper-like set (PEO, CPE-3/5/7/10/15 Fe-Ni, CPE-10-Fe, CPE-10-Ni); sigma_NE ~ exp(-Ea/kT),
    highest at 10 wt%; returns (transport paths, systems config)."""
    systems = {"PEO": (0, None), "CPE-3": (3, "FeNi"), "CPE-5": (5, "FeNi"), "CPE-7": (7, "FeNi"),
               "CPE-10": (10, "FeNi"), "CPE-15": (15, "FeNi"), "CPE-10-Fe": (10, "Fe"), "CPE-10-Ni": (10, "Ni")}
    boost = {"PEO": 1.0, "CPE-3": 1.5, "CPE-5": 2.0, "CPE-7": 2.8, "CPE-10": 4.0, "CPE-15": 2.5,
             "CPE-10-Fe": 2.0, "CPE-10-Ni": 1.8}
    paths = []
    for name, (wt, metal) in systems.items():
        for T in temperatures:
            for rep in range(replicas):
                f = boost[name]
                s = arrhenius(T, 10.0, Ea_eV) * f
                D = arrhenius(T, 1e-3, Ea_eV) * f
                rec = transport_record(name, rep, T, D_Na=D, D_Na_sigma=0.05 * D, sigma_NE=s, sigma_NE_err=0.02 * s,
                                       t_plus=0.2 + 0.04 * f, t_plus_err=0.01, cn=4.0 - 0.4 * f, free=0.2 + 0.05 * f,
                                       peaks_A=(2.3, 4.5))
                dens = [0.9] * 10 + [1.07] * 10 if wt == 0 else None
                paths.append(write_run(root, name, rep, T, rec, wt=wt, metal=metal, density=dens,
                                       rdf_shift_nm=0.0 if wt == 0 else 0.005, msd_slope=6e-3 * f))
    cfg = {n: {"eo_per_chain": 50, "eo_per_na": 20, "mof_wt_percent": wt, **({"mof_metal": m} if m else {}),
               **({"chains": 56} if wt == 0 else {})} for n, (wt, m) in systems.items()}
    return paths, cfg
