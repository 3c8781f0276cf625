"""Mean squared displacement (FFT algorithm) and self-diffusion coefficient with an uncertainty.

MSD (Einstein), averaged over particles and time origins, for lag m (frames), T frames:

    MSD(m) = 1/P sum_p 1/(T-m) sum_{t=0}^{T-1-m} |x_p(t+m) - x_p(t)|^2
           = S1(m) - 2 S2(m)                                   (Calandrini et al. 2011)
    S1(m)  = 1/(T-m) sum_t [x(t)^2 + x(t+m)^2]   (cumulative sums)
    S2(m)  = 1/(T-m) sum_t x(t).x(t+m)           (autocorrelation by FFT, zero padded to 2T)

Preconditions: MSD needs unwrapped coordinates. A wrapped trajectory is unwrapped here by
accumulating frame-to-frame minimum-image displacements, valid only when no particle moves more
than half the shortest box width between consecutive frames (``results.max_step_fraction`` reports
the largest step as a fraction of that half width). Particles are atoms or centres of mass of
residues (``compound="residues"``, molecule made whole by minimum image to its first atom, so it must
be smaller than half the box). Frames must be equally spaced in time.

Diffusion coefficient (dimension d = len(msd_type)): MSD = 2 d D t + c fitted by least squares in
the window [fit_start_fraction, fit_end_fraction] x longest lag. beta = d ln MSD / d ln t in that
window (1 = diffusive, < 1 subdiffusive); when |beta - 1| > beta_tolerance the start of the window is
moved later (steps of 1/5 of the window) to the first start where beta is within tolerance; if none
is, the configured window is kept and ``beta_ok`` is False.

Uncertainty (stated in ``results.uncertainty_method``): block averaging over independent time
blocks. The trajectory is cut into n_blocks consecutive blocks (each >= min_block_frames frames);
the MSD of each block is fitted in the same fractional window of the block's longest lag; D is the
mean of the block values and sigma_D their standard error (std with ddof=1 / sqrt(n_blocks),
n_blocks - 1 degrees of freedom: with few blocks the error of sigma_D itself is large and the tails
heavy, so a 95 % interval is D +- t_{0.975, n_blocks-1} sigma_D, reported as
D_ci95_half_width_nm2_per_ps). The fit of the whole-trajectory MSD is reported as D_full_fit;
a difference to D larger than 3 sigma means the diffusive regime is not reached within a block.
With fewer than 2 blocks possible, D is the whole-trajectory fit and sigma_D its least-squares
standard error (which ignores the correlation of MSD points and underestimates), flagged.

Finite-size correction (Yeh & Hummer 2004): D_inf = D_PBC + k_B T xi / (6 pi eta L), xi = 2.837297,
for a cubic box of edge L and shear viscosity eta.
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase

from spemd.errors import ConfigError, InputError, one_of
from spemd.units import (BOLTZMANN_J_PER_K, M_PER_CM, M_PER_NM, angstrom_to_nm, cm2_per_s_to_nm2_per_ps,
                           nm2_per_ps_to_cm2_per_s)

from spemd.analysis._common import (Unwrapper, box_volume_nm3, check_atomgroup, compound_centres, compound_layout,
                              frame_spacing_ps, linear_fit)

MSD_TYPES = ("xyz", "xy", "xz", "yz", "x", "y", "z")
YEH_HUMMER_XI = 2.837297
#: m per cm; spemd.units has no metre conversions yet (SI viscosity needs them).


def msd_fft(positions, chunk_columns: int = 3072) -> np.ndarray:
    """Particle-averaged MSD for every lag 0..T-1 of `positions` (T, P, d) by the FFT algorithm."""
    from scipy.fft import irfft, next_fast_len, rfft

    x = np.asarray(positions, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    T, P = x.shape[0], x.shape[1]
    cols = x.reshape(T, -1)
    n = next_fast_len(2 * T, real=True)
    s1_num = np.zeros(T)
    s2_num = np.zeros(T)
    for c0 in range(0, cols.shape[1], chunk_columns):
        block = cols[:, c0:c0 + chunk_columns]
        block = block - block.mean(axis=0)  # MSD is shift invariant; improves precision
        f = rfft(block, n=n, axis=0)
        ac = irfft(f * np.conj(f), n=n, axis=0)[:T]
        s2_num += ac.sum(axis=1)
        dsq = (block**2).sum(axis=1)
        csum = np.r_[0.0, np.cumsum(dsq)]
        m = np.arange(T)
        s1_num += csum[T - m] + csum[T] - csum[m]
    counts = (T - np.arange(T)) * P
    msd = (s1_num - 2.0 * s2_num) / counts
    msd[0] = 0.0
    return np.maximum(msd, 0.0)


def fit_window(n_frames: int, start_fraction: float, end_fraction: float, label: str = "MSD fit window"):
    """Lag indices (first, last) of the fit window; too few points raises InputError."""
    if not (0 <= start_fraction < end_fraction <= 1):
        raise ConfigError(
            f"msd_fit_start_fraction/msd_fit_end_fraction: {start_fraction!r}/{end_fraction!r}; "
            "need 0 <= start < end <= 1")
    longest = n_frames - 1
    i0 = max(1, int(round(start_fraction * longest)))
    i1 = min(longest, int(round(end_fraction * longest)))
    if i1 - i0 + 1 < 2:
        raise InputError(
            f"{label}: {n_frames} frames leave {max(i1 - i0 + 1, 0)} lag(s) in [{start_fraction}, {end_fraction}] "
            "of the longest lag; need >= 2 (more frames or a wider window)")
    return i0, i1


def loglog_slope(lags, msd) -> float:
    lags, msd = np.asarray(lags, float), np.asarray(msd, float)
    ok = (lags > 0) & (msd > 0)
    if ok.sum() < 2:
        return float("nan")
    return linear_fit(np.log(lags[ok]), np.log(msd[ok]))[0]


def _slope_D(lags, msd, i0, i1, dim):
    a, _, sa, dof = linear_fit(lags[i0:i1 + 1], msd[i0:i1 + 1])
    return a / (2 * dim), sa / (2 * dim), dof


def fit_diffusion(lags_ps, msd_nm2, positions_nm=None, dim=3, fit_start_fraction=0.1, fit_end_fraction=0.5,
                  n_blocks=5, min_block_frames=20, beta_tolerance=0.15) -> dict:
    """Diffusion coefficient from an MSD curve, with block-averaging uncertainty (module docstring).

    `positions_nm` (T, P, d) are the unwrapped positions behind `msd_nm2`; they are needed for the
    blocks. Without them the least-squares standard error is used (flagged).
    """
    lags = np.asarray(lags_ps, dtype=float)
    msd = np.asarray(msd_nm2, dtype=float)
    T = len(lags)
    i0, i1 = fit_window(T, fit_start_fraction, fit_end_fraction)
    beta = loglog_slope(lags[i0:i1 + 1], msd[i0:i1 + 1])
    start = fit_start_fraction
    selection = "configured window"
    if not (abs(beta - 1) <= beta_tolerance):
        for k in range(1, 4):
            f = fit_start_fraction + k * (fit_end_fraction - fit_start_fraction) / 5
            j0, j1 = fit_window(T, f, fit_end_fraction)
            if j1 - j0 + 1 < 3:
                break
            b = loglog_slope(lags[j0:j1 + 1], msd[j0:j1 + 1])
            if abs(b - 1) <= beta_tolerance:
                i0, i1, beta, start = j0, j1, b, f
                selection = f"start moved to {f:.3g} of the longest lag (log-log slope)"
                break
    D_full, sD_full, dof = _slope_D(lags, msd, i0, i1, dim)
    out = {
        "D_full_fit_nm2_per_ps": D_full,
        "beta": beta,
        "beta_ok": bool(abs(beta - 1) <= beta_tolerance),
        "fit_window_ps": [float(lags[i0]), float(lags[i1])],
        "fit_window_fractions": [float(start), float(fit_end_fraction)],
        "window_selection": selection,
        "dimension": dim,
    }
    nb = 0 if positions_nm is None else min(int(n_blocks), T // int(min_block_frames))
    block_D = []
    if nb >= 2:
        L = T // nb
        pos = np.asarray(positions_nm)
        try:
            b0, b1 = fit_window(L, start, fit_end_fraction)
        except InputError:
            nb = 0
        else:
            for b in range(nb):
                m = msd_fft(pos[b * L:(b + 1) * L])
                block_D.append(_slope_D(lags[:L], m, b0, b1, dim)[0])
    if nb >= 2:
        block_D = np.asarray(block_D)
        D = float(block_D.mean())
        sD = float(block_D.std(ddof=1) / np.sqrt(nb))
        method = (f"block averaging: mean and standard error over {nb} independent time blocks of "
                  f"{T // nb} frames ({nb - 1} degrees of freedom)")
        consistent = bool(abs(D - D_full) <= 3 * sD) if sD > 0 else bool(np.isclose(D, D_full))
    else:
        D = D_full
        sD = sD_full if np.isfinite(sD_full) and dof > 0 else abs(D_full)
        method = ("least-squares standard error of the whole-trajectory fit (too few frames for >= 2 blocks "
                  f"of {min_block_frames}; ignores MSD correlations, underestimates)")
        if not (dof > 0 and np.isfinite(sD_full)):
            method = "not estimable (2-point fit); sigma set to |D|"
        consistent = None
    out.update({
        "D_nm2_per_ps": D,
        "D_sigma_nm2_per_ps": sD,
        "D_cm2_per_s": float(nm2_per_ps_to_cm2_per_s(D)),
        "D_sigma_cm2_per_s": float(nm2_per_ps_to_cm2_per_s(sD)),
        "D_dof": int(nb - 1) if nb >= 2 else int(max(dof, 0)),
        "D_ci95_half_width_nm2_per_ps": _t95(nb - 1 if nb >= 2 else dof) * sD,
        "n_blocks": int(nb) if nb >= 2 else 0,
        "block_D_nm2_per_ps": [float(x) for x in block_D] if nb >= 2 else [],
        "uncertainty_method": method,
        "block_consistent_with_full_fit": consistent,
    })
    return out


def _t95(dof) -> float:
    """Two-sided 95 % Student-t factor for `dof` degrees of freedom (inf when dof < 1)."""
    from scipy.special import stdtrit

    return float(stdtrit(dof, 0.975)) if dof >= 1 else float("inf")


class MSD(AnalysisBase):
    """MSD and D of the atoms of `group` (``compound="atoms"``) or of their residues' centres of mass.

    Parameters
    ----------
    group : AtomGroup
    compound : "atoms" | "residues" | "molecules"
    msd_type : "xyz" (default), "xy", "z", ...
    unwrap : bool, unwrap by minimum-image displacement accumulation (module docstring)
    fit_start_fraction, fit_end_fraction, n_blocks, min_block_frames, beta_tolerance : see fit_diffusion
    viscosity_Pa_s, temperature_K : optional, add the Yeh-Hummer corrected D (cubic box assumed)

    Results: ``lagtimes_ps``, ``msd_nm2``, ``positions_nm`` (T, P, 3 unwrapped), ``dt_ps``,
    ``n_particles``, ``mean_volume_nm3``, ``mean_box_nm``, ``max_step_fraction`` and everything of
    :func:`fit_diffusion` (``D_nm2_per_ps``, ``D_sigma_nm2_per_ps``, ``D_cm2_per_s``, ``beta`` ...).
    """

    def __init__(self, group, compound="atoms", msd_type="xyz", unwrap=True, fit_start_fraction=0.1,
                 fit_end_fraction=0.5, n_blocks=5, min_block_frames=20, beta_tolerance=0.15,
                 viscosity_Pa_s=None, temperature_K=None, **kwargs):
        super().__init__(group.universe.trajectory, **kwargs)
        self.group = check_atomgroup(group, "MSD group")
        if msd_type not in MSD_TYPES:
            raise ConfigError(one_of("msd_type", msd_type, MSD_TYPES))
        self.compound = compound
        self.msd_type = msd_type
        self._dims = ["xyz".index(c) for c in msd_type]
        self.unwrap = unwrap
        self.fit_kwargs = dict(fit_start_fraction=fit_start_fraction, fit_end_fraction=fit_end_fraction,
                               n_blocks=n_blocks, min_block_frames=min_block_frames,
                               beta_tolerance=beta_tolerance)
        self.viscosity_Pa_s = viscosity_Pa_s
        self.temperature_K = temperature_K

    def _prepare(self):
        self._layout = compound_layout(self.group, self.compound)
        n = len(self.group) if self.compound == "atoms" else len(self._layout[1])
        self._pos = np.empty((self.n_frames, n, 3), dtype=np.float64)
        self._vol = np.full(self.n_frames, np.nan)
        self._box = np.full((self.n_frames, 3), np.nan)
        self._unwrapper = Unwrapper()

    def _single_frame(self):
        p = self.group.positions
        dims = self._ts.dimensions
        has_box = dims is not None and np.all(np.asarray(dims[:3]) > 0)
        if self.compound != "atoms":
            if not has_box:
                raise InputError(f"MSD trajectory: frame {self._ts.frame} has no box; centres of mass need one")
            p = compound_centres(p, dims, self._layout)
        if self.unwrap:
            if not has_box:
                raise InputError(f"MSD trajectory: frame {self._ts.frame} has no box; unwrapping needs one "
                                 "(give unwrap=False for already unwrapped coordinates)")
            p = self._unwrapper.step(p, dims)
        self._pos[self._frame_index] = angstrom_to_nm(np.asarray(p, dtype=np.float64))
        if has_box:
            self._vol[self._frame_index] = box_volume_nm3(dims)
            self._box[self._frame_index] = angstrom_to_nm(np.asarray(dims[:3], dtype=float))

    def _conclude(self):
        r = self.results
        dt = frame_spacing_ps(self.times, "MSD trajectory")
        T = self.n_frames
        fit_window(T, self.fit_kwargs["fit_start_fraction"], self.fit_kwargs["fit_end_fraction"])
        pos = self._pos[:, :, self._dims]
        r.dt_ps = dt
        r.lagtimes_ps = np.arange(T) * dt
        r.msd_nm2 = msd_fft(pos)
        r.positions_nm = self._pos
        r.n_particles = self._pos.shape[1]
        r.msd_type = self.msd_type
        r.mean_volume_nm3 = float(np.nanmean(self._vol)) if np.isfinite(self._vol).any() else float("nan")
        r.mean_box_nm = np.nanmean(self._box, axis=0) if np.isfinite(self._box).any() else np.full(3, np.nan)
        r.max_step_fraction = self._unwrapper.max_step_fraction
        r.unwrap_precondition_ok = bool(r.max_step_fraction < 0.9)
        r.update(fit_diffusion(r.lagtimes_ps, r.msd_nm2, pos, dim=len(self._dims), **self.fit_kwargs))
        if self.viscosity_Pa_s is not None:
            if self.temperature_K is None:
                raise ConfigError("temperature_K: required with viscosity_Pa_s for the Yeh-Hummer correction")
            L = float(np.cbrt(r.mean_volume_nm3))
            corr = yeh_hummer_correction_nm2_per_ps(L, self.viscosity_Pa_s, self.temperature_K)
            r.yeh_hummer_correction_nm2_per_ps = corr
            r.D_corrected_nm2_per_ps = r.D_nm2_per_ps + corr
            r.D_corrected_cm2_per_s = float(nm2_per_ps_to_cm2_per_s(r.D_corrected_nm2_per_ps))


def yeh_hummer_correction_nm2_per_ps(box_length_nm: float, viscosity_Pa_s: float, temperature_K: float) -> float:
    """k_B T xi / (6 pi eta L) in nm^2/ps (cubic box of edge L, shear viscosity eta in Pa s)."""
    if not (box_length_nm > 0 and viscosity_Pa_s > 0 and temperature_K > 0):
        raise ConfigError(
            f"yeh_hummer: box_length_nm={box_length_nm!r}, viscosity_Pa_s={viscosity_Pa_s!r}, "
            f"temperature_K={temperature_K!r}; all must be > 0")
    L_m = box_length_nm * M_PER_NM
    d_m2_per_s = BOLTZMANN_J_PER_K * temperature_K * YEH_HUMMER_XI / (6 * np.pi * viscosity_Pa_s * L_m)
    d_cm2_per_s = d_m2_per_s / M_PER_CM**2
    return float(cm2_per_s_to_nm2_per_ps(d_cm2_per_s))


def combine_estimates(values, sigmas) -> dict:
    """Combine independent estimates (e.g. D of replicas) into one value with an uncertainty.

    Inverse-variance weighted mean; sigma = internal error 1/sqrt(sum w) scaled by the Birge ratio
    sqrt(chi2/(n-1)) when that exceeds 1 (replicas scatter more than their error bars say). Without
    usable sigmas (non-finite or zero), the plain mean and its standard error are used.
    """
    x = np.asarray(values, dtype=float)
    s = np.asarray(sigmas, dtype=float)
    keep = np.isfinite(x)
    x, s = x[keep], s[keep]
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "sigma": float("nan"), "n": 0, "method": "no finite values"}
    if n == 1:
        return {"mean": float(x[0]), "sigma": float(s[0]) if np.isfinite(s[0]) else float("nan"), "n": 1,
                "method": "single estimate"}
    if np.all(np.isfinite(s)) and np.all(s > 0):
        w = 1.0 / s**2
        mean = float(np.sum(w * x) / np.sum(w))
        internal = float(1.0 / np.sqrt(np.sum(w)))
        chi2 = float(np.sum(w * (x - mean) ** 2))
        birge = float(np.sqrt(chi2 / (n - 1)))
        return {"mean": mean, "sigma": internal * max(1.0, birge), "n": n, "birge_ratio": birge,
                "method": "inverse-variance weighted mean; sigma scaled by the Birge ratio when > 1"}
    return {"mean": float(x.mean()), "sigma": float(x.std(ddof=1) / np.sqrt(n)), "n": n,
            "method": "plain mean and standard error (some sigmas unusable)"}
