"""Coordination numbers compared at one radius: the study's first shell per temperature.

Each run's own first-shell radius comes from its own noisy g(r); comparing CNs taken at different
radii compares the radii as much as the shells. So for every temperature one radius r_c is chosen for
the pair (Na-O(TFSI)) and every run's CN is read at it:

- r_c = ``analysis.shell_radius_nm`` when the runs used one (transport.json ``first_shell_source``
  "config ..."); otherwise the first minimum (analysis.rdf.first_shell, with the pair's physical
  bounds analysis.rdf.SHELL_BOUNDS_NM) of the pooled g(r): the mean over the runs at that temperature
  of their finite-size corrected g (raw g where a file has none), with the error
  sqrt(sum SEM^2) / n_runs. No minimum: r_c is null, ``reason`` says why, and no CN is compared.
- CN of a run: n(r) of its ``rdf_<pair>.csv`` (tabulated at the bins' upper edges) at r_c, with the
  "n(r) SEM" column (standard error over the Na+ ions) where the file has it.
- CN of a system: analysis.msd.combine_estimates over replicas (inverse-variance weighted mean, sigma
  scaled by the Birge ratio when replicas scatter more than their errors); without per-run errors the
  replica mean and its standard error. A difference of two systems carries both in quadrature.

- No minimum in the pooled g(r) but every run used the same ``analysis.shell_radius_fallback_nm``: r_c is
  that radius (source "fallback ..."), the pooled reason kept.
- Free fractions of a system at r_c: each run's ``speciation_free_vs_cutoff.csv`` (analysis/speciation.py:
  free Na+ and free TFSI- on a grid of cutoffs) interpolated at r_c, combined over replicas as the CNs are
  (``free_Na``, ``free_TFSI``). The CIP/AGG fractions and residence times are not recomputed (they need
  the trajectory); the record lists each system's pairing cutoffs so that a comparison at different
  cutoffs is visible, and ``analysis.shell_radius_nm`` makes them one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from spemd.units import nm_to_angstrom

from spemd.analysis.msd import combine_estimates
from spemd.analysis.rdf import SHELL_BOUNDS_NM, first_shell

PAIR = "Na-O_TFSI"


def _curve(path: Path, read_csv):
    """(r, g, g_sem, n, n_sem) of one rdf CSV; SEM columns NaN where the file has none."""
    c = read_csv(path)
    r = c["r (nm)"]
    corr = c.get("g(r) finite-size corrected")
    use_corr = corr is not None and np.all(np.isfinite(corr))
    g = corr if use_corr else c["g(r)"]
    nan = np.full(len(r), np.nan)
    sem = c.get("g(r) finite-size corrected SEM" if use_corr else "g(r) SEM", nan)
    return r, g, sem, c["n(r)"], c.get("n(r) SEM", nan)


def _at(r, y, rc):
    """y (tabulated at the bins' upper edges) at radius rc."""
    dr = float(np.median(np.diff(r))) if len(r) > 1 else 0.0
    return float(np.interp(rc, r + 0.5 * dr, y))


def _combine(values, sems) -> dict:
    v, s = np.asarray(values, float), np.asarray(sems, float)
    if len(v) > 1 and not (np.all(np.isfinite(s)) and np.all(s > 0)):
        return {"mean": float(v.mean()), "sigma": float(v.std(ddof=1) / math.sqrt(len(v))), "n": len(v),
                "method": "replica mean and standard error (no per-run error)"}
    return combine_estimates(v, s)


def _free_at(group, rc, column, read_csv) -> dict:
    """{system: combined free fraction at rc} from the runs' speciation_free_vs_cutoff.csv (within its grid)."""
    by_system = {}
    for r in group:
        p = Path(r["analysis_dir"]) / "speciation_free_vs_cutoff.csv"
        if not p.is_file():
            continue
        c = read_csv(p)
        grid = c["cutoff (nm)"]
        if not grid[0] <= rc <= grid[-1]:
            continue
        by_system.setdefault(r["system"], []).append(
            (float(np.interp(rc, grid, c[column])), float(np.interp(rc, grid, c[f"{column} SEM"]))))
    return {s: _combine([v for v, _ in vals], [e for _, e in vals]) for s, vals in sorted(by_system.items())}


def common_shells(runs: list[dict], read_csv, pair: str = PAIR) -> dict:
    """{T: record} of the radius every CN at temperature T is compared at (module docstring).

    `runs`: analysis.study.load_runs records (``analysis_dir``, ``shell``); `read_csv`: path -> columns."""
    out = {}
    for T in sorted({r["temperature_K"] for r in runs}):
        group = [r for r in runs if r["temperature_K"] == T]
        curves = {}
        for r in group:
            p = Path(r["analysis_dir"]) / f"rdf_{pair}.csv"
            if p.is_file():
                curves[(r["system"], str(r["replica"]))] = _curve(p, read_csv)
        config = {r["shell"]["radius_nm"] for r in group if str(r["shell"].get("source") or "").startswith("config")}
        rec = {"pair": pair, "n_runs": len(curves), "radius_nm": float("nan"), "reason": None,
               "bounds_A": [float(nm_to_angstrom(x)) for x in SHELL_BOUNDS_NM[pair]] if pair in SHELL_BOUNDS_NM else None,
               "own_radius_A": {f"{r['system']} rep{r['replica']}": r["shell"]["radius_A"] for r in group},
               "own_reason": {f"{r['system']} rep{r['replica']}": r["shell"]["reason"] for r in group
                              if r["shell"]["reason"]},
               "cn": {}}
        cutoffs = {}
        for r in group:
            if r["shell"].get("cutoff_A") is not None:
                cutoffs.setdefault(r["system"], set()).add(round(float(r["shell"]["cutoff_A"]), 4))
        rec["pairing_cutoff_A"] = {s: sorted(v) for s, v in sorted(cutoffs.items())}
        if len(config) == 1:
            rec["radius_nm"], rec["source"] = config.pop(), "config analysis.shell_radius_nm"
        elif not curves:
            rec["reason"], rec["source"] = f"no rdf_{pair}.csv at this temperature", None
        else:
            r0 = next(iter(curves.values()))[0]
            same = [c for c in curves.values() if len(c[0]) == len(r0) and np.allclose(c[0], r0)]
            if len(same) < len(curves):
                rec["reason"], rec["source"] = "the runs' g(r) use different bins; set analysis.shell_radius_nm", None
            else:
                g = np.mean([c[1] for c in same], axis=0)
                sem = np.sqrt(np.sum([c[2] ** 2 for c in same], axis=0)) / len(same)
                shell = first_shell(r0, g, np.zeros_like(g), sem=None if np.all(np.isnan(sem)) else sem,
                                    bounds_nm=SHELL_BOUNDS_NM.get(pair))
                rec["radius_nm"], rec["reason"] = shell["first_shell_radius_nm"], shell["first_shell_reason"]
                rec["source"] = f"first minimum of the pooled g(r) of {len(same)} run(s) at {T:g} K"
                fallback = {r["shell"]["radius_nm"] for r in group
                            if str(r["shell"].get("source") or "").startswith("fallback")}
                if not np.isfinite(rec["radius_nm"]) and len(fallback) == 1 and all(
                        str(r["shell"].get("source") or "").startswith("fallback") for r in group):
                    rec["radius_nm"] = fallback.pop()
                    rec["source"] = f"fallback analysis.shell_radius_fallback_nm (pooled g(r): {rec['reason']})"
                    rec["reason"] = None
        rec["radius_A"] = float(nm_to_angstrom(rec["radius_nm"]))
        if np.isfinite(rec["radius_nm"]):
            for system in sorted({s for s, _ in curves}):
                runs_s = [c for (s, _), c in curves.items() if s == system]
                vals = [_at(c[0], c[3], rec["radius_nm"]) for c in runs_s]
                sems = [_at(c[0], c[4], rec["radius_nm"]) for c in runs_s]
                rec["cn"][system] = _combine(vals, sems)
            for key, column in (("free_Na", "free Na+ fraction"), ("free_TFSI", "free TFSI- fraction")):
                rec[key] = _free_at(group, rec["radius_nm"], column, read_csv)
        out[T] = rec
    return out


__all__ = ["PAIR", "common_shells"]
