"""Temperature dependence of D or sigma: Arrhenius and Vogel-Fulcher-Tammann (VFT) fits.

Arrhenius:  y(T) = A exp(-E_a / (k_B T))            ln y = ln A - E_a/k_B * (1/T)
VFT:        y(T) = A exp(-B / (T - T_0))            pseudo-activation energy E_a = k_B B

Both are fitted to ln y (weighted least squares with sigma_ln y = sigma_y / y when uncertainties are
given, else unweighted). E_a is returned in eV with its standard error from the parameter covariance;
with weights the covariance is scaled by the reduced chi^2 when that exceeds 1 (scatter larger than the
error bars). Arrhenius needs >= 2 temperatures (>= 3 for an uncertainty without weights); VFT has
three parameters and needs >= 4 temperatures, T_0 below the lowest temperature.
"""

from __future__ import annotations

import numpy as np

from spemd.errors import InputError
from spemd.units import BOLTZMANN_EV_PER_K


def _clean(T, y, sigma, label):
    T = np.asarray(T, dtype=float)
    y = np.asarray(y, dtype=float)
    if T.shape != y.shape:
        raise InputError(f"{label}: {T.size} temperatures but {y.size} values")
    if np.any(~np.isfinite(T)) or np.any(T <= 0):
        raise InputError(f"{label}: temperatures must be finite and > 0 K (got {T.tolist()})")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise InputError(f"{label}: values must be finite and > 0 for a log fit (got {y.tolist()})")
    s = None
    if sigma is not None:
        s = np.asarray(sigma, dtype=float)
        if s.shape != y.shape or np.any(~np.isfinite(s)) or np.any(s <= 0):
            s = None  # unusable uncertainties: fall back to unweighted
    return T, y, s


def arrhenius_fit(temperatures_K, values, sigmas=None) -> dict:
    """Arrhenius fit; returns Ea_eV, Ea_err_eV, prefactor, ln_prefactor(_err), n_points, weighted."""
    T, y, s = _clean(temperatures_K, values, sigmas, "arrhenius_fit")
    if len(np.unique(T)) < 2:
        raise InputError(f"arrhenius_fit: {len(np.unique(T))} distinct temperature(s); need >= 2")
    x = 1.0 / T
    ly = np.log(y)
    w = np.ones_like(ly) if s is None else (y / s) ** 2
    A = np.vstack([x, np.ones_like(x)]).T
    W = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(A * W[:, None], ly * W, rcond=None)
    cov = np.linalg.inv((A * w[:, None]).T @ A)
    dof = len(T) - 2
    resid = ly - A @ coef
    chi2 = float(np.sum(w * resid**2))
    if s is None:
        cov = cov * (chi2 / dof) if dof > 0 else cov * np.nan
    elif dof > 0 and chi2 / dof > 1:
        cov = cov * (chi2 / dof)
    slope, intercept = coef
    return {"Ea_eV": float(-slope * BOLTZMANN_EV_PER_K), "Ea_err_eV": float(np.sqrt(cov[0, 0]) * BOLTZMANN_EV_PER_K),
            "ln_prefactor": float(intercept), "ln_prefactor_err": float(np.sqrt(cov[1, 1])),
            "prefactor": float(np.exp(intercept)), "n_points": int(len(T)), "weighted": s is not None,
            "model": "y = A exp(-Ea/(kB T))"}


def vft_fit(temperatures_K, values, sigmas=None, T0_guess=None) -> dict:
    """VFT fit; returns Ea_eV (= k_B B), Ea_err_eV, B_K, T0_K (+ errors), ln_prefactor."""
    from scipy.optimize import curve_fit

    T, y, s = _clean(temperatures_K, values, sigmas, "vft_fit")
    if len(np.unique(T)) < 4:
        raise InputError(f"vft_fit: {len(np.unique(T))} distinct temperature(s); need >= 4 for 3 parameters")
    ly = np.log(y)
    sl = None if s is None else s / y
    Tmin = float(T.min())

    def model(t, lnA, B, T0):
        return lnA - B / (t - T0)

    guesses = [T0_guess] if T0_guess is not None else [0.5 * Tmin, 0.7 * Tmin, 0.3 * Tmin, 0.85 * Tmin]
    best = None
    for T0g in guesses:
        arr = arrhenius_fit(T, y)
        B0 = arr["Ea_eV"] / BOLTZMANN_EV_PER_K * (1 - T0g / Tmin) ** 2
        try:
            p, cov = curve_fit(model, T, ly, p0=[arr["ln_prefactor"], max(B0, 1.0), T0g], sigma=sl,
                               absolute_sigma=sl is not None,
                               bounds=([-np.inf, 0.0, 0.0], [np.inf, np.inf, Tmin * (1 - 1e-6)]), maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        chi = float(np.sum(((ly - model(T, *p)) / (1 if sl is None else sl)) ** 2))
        if best is None or chi < best[2]:
            best = (p, cov, chi)
    if best is None:
        raise InputError("vft_fit: the fit did not converge for these values; check them or use arrhenius_fit")
    p, cov, chi = best
    dof = len(T) - 3
    if sl is not None and dof > 0 and chi / dof > 1:
        cov = cov * (chi / dof)
    err = np.sqrt(np.clip(np.diag(cov), 0, np.inf))
    return {"Ea_eV": float(p[1] * BOLTZMANN_EV_PER_K), "Ea_err_eV": float(err[1] * BOLTZMANN_EV_PER_K),
            "B_K": float(p[1]), "B_err_K": float(err[1]), "T0_K": float(p[2]), "T0_err_K": float(err[2]),
            "ln_prefactor": float(p[0]), "ln_prefactor_err": float(err[0]), "n_points": int(len(T)),
            "weighted": sl is not None, "model": "y = A exp(-B/(T - T0)), Ea = kB B"}
