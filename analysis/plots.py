"""Figures (matplotlib, Agg backend), each written as PNG and SVG through atomic writes.

- :func:`plot_rdf`: g(r) (left axis) and running coordination number n(r) (right axis) vs r in
  Angstrom, first-shell radius marked (style of Dong et al. Fig. 4e).
- :func:`plot_msd`: MSD vs lag, log-log and linear panels, diffusive fit window shaded and the fitted
  line drawn (Fig. 4f style).
- :func:`plot_arrhenius`: ln y vs 1000/T with error bars and the Arrhenius line, Ea in the legend.
- :func:`plot_series`: lines (with error bands) against one axis: the interface figures (analysis/interface.py).
Every function returns the list of written paths.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spemd.files import atomic_path  # noqa: E402
from spemd.units import nm_to_angstrom  # noqa: E402


def _save(fig, stem) -> list[Path]:
    stem = Path(stem)
    paths = []
    for ext in ("png", "svg"):
        target = stem.with_suffix(f".{ext}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(target)
    plt.close(fig)
    return paths


def plot_rdf(curves, stem, title=None) -> list[Path]:
    """`curves`: list of dicts with r_nm, g, cn, label and optional first_shell_radius_nm."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax2 = ax.twinx()
    for i, c in enumerate(curves):
        color = f"C{i}"
        r_A = nm_to_angstrom(np.asarray(c["r_nm"]))
        ax.plot(r_A, c["g"], color=color, label=f"g(r) {c['label']}")
        ax2.plot(r_A, c["cn"], color=color, ls="--", label=f"n(r) {c['label']}")
        rc = c.get("first_shell_radius_nm")
        if rc is not None and np.isfinite(rc):
            ax.axvline(nm_to_angstrom(rc), color=color, lw=0.6, ls=":")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("g(r)")
    ax2.set_ylabel("n(r)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right")
    if title:
        ax.set_title(title, fontsize=9, y=1.0)  # fixed y: no collision search
    return _save(fig, stem)


def plot_msd(curves, stem, title=None) -> list[Path]:
    """`curves`: dicts with lag_ps, msd_nm2, label, and optional fit_window_ps, D_nm2_per_ps, dim, beta."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4))
    for i, c in enumerate(curves):
        color = f"C{i}"
        t = np.asarray(c["lag_ps"], dtype=float)
        m = np.asarray(c["msd_nm2"], dtype=float)
        ok = t > 0
        beta = c.get("beta")
        lab = c["label"] + (f" (β={beta:.2f})" if beta is not None and np.isfinite(beta) else "")
        a1.loglog(t[ok], m[ok], color=color, label=lab)
        a2.plot(t, m, color=color, label=lab)
        win = c.get("fit_window_ps")
        if win is not None:
            for ax in (a1, a2):
                ax.axvspan(win[0], win[1], color=color, alpha=0.08)
            D = c.get("D_nm2_per_ps")
            if D is not None and np.isfinite(D):
                sel = (t >= win[0]) & (t <= win[1])
                tt, mm = t[sel], m[sel]
                b = np.mean(mm - 2 * c.get("dim", 3) * D * tt) if len(tt) else 0.0
                a2.plot(tt, 2 * c.get("dim", 3) * D * tt + b, color="k", lw=0.8, ls="--")
    a1.set_xlabel("lag (ps)")
    a1.set_ylabel("MSD (nm²)")
    a2.set_xlabel("lag (ps)")
    a2.set_ylabel("MSD (nm²)")
    a1.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, stem)


def plot_arrhenius(temperatures_K, values, sigmas, fit, stem, ylabel="D (cm²/s)", title=None) -> list[Path]:
    """ln(value) vs 1000/T with error bars and the fitted Arrhenius line (`fit` from arrhenius_fit)."""
    T = np.asarray(temperatures_K, dtype=float)
    y = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    err = None if sigmas is None else np.asarray(sigmas, dtype=float)
    ax.errorbar(1000.0 / T, y, yerr=err, fmt="o", capsize=3)
    if fit is not None:
        from spemd.units import BOLTZMANN_EV_PER_K

        x = np.linspace(T.min(), T.max(), 50)
        ax.plot(1000.0 / x, np.exp(fit["ln_prefactor"] - fit["Ea_eV"] / (BOLTZMANN_EV_PER_K * x)), "k--",
                label=f"Ea = {fit['Ea_eV']:.3f} ± {fit['Ea_err_eV']:.3f} eV")
        ax.legend(fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("1000/T (1/K)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9, y=1.0)  # fixed y: no collision search
    return _save(fig, stem)


def plot_series(x, curves, stem, xlabel, ylabel, title=None, vlines=()) -> list[Path]:
    """Lines against one x axis (interface profiles, occupancy against time, speciation against distance).

    `curves`: dicts with y, label and optional err (a shaded ±err band); `vlines`: x positions marked dotted."""
    x = np.asarray(x, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for i, c in enumerate(curves):
        y = np.asarray(c["y"], dtype=float)
        ax.plot(x, y, color=f"C{i}", label=c["label"])
        if c.get("err") is not None:
            e = np.asarray(c["err"], dtype=float)
            ax.fill_between(x, y - e, y + e, color=f"C{i}", alpha=0.2, lw=0)
    for v in vlines:
        ax.axvline(v, color="k", lw=0.6, ls=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9, y=1.0)  # fixed y: no collision search
    return _save(fig, stem)
