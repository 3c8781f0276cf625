"""What the study's parts share: the verdict rule, its tolerances, number formatting, and the NPT density
read from a run's state.csv (also the protocol's plateau test, pipeline/equilibration.py).

Verdicts: a claim is a difference d with uncertainty s; d > K_SIGMA s: "yes", d < -K_SIGMA s: "no",
otherwise "inconclusive"; no finite s: "inconclusive" (analysis/study.py's docstring has the whole rule).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from spemd.errors import InputError

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
