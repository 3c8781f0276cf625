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

Diffusion coefficient (dimension d = len(msd_type)) from the MSD of the whole trajectory (all
particles, all time origins), MSD(t) = 2 d D t + c fitted over a window chosen from the data:

- Window rule: local beta = d ln MSD / d ln t is taken as the log-log slope over segments [m, 3m]
  (starts a quarter octave apart) inside the search range [fit_start_fraction, fit_end_fraction] x
  longest lag (longer lags have too few independent origins). The window starts at the first m from
  which every segment up to the end of the range has |beta - 1| <= beta_tolerance (0.1, i.e. 0.9-1.1)
  and ends at the end of the range. ``beta`` (slope over the window), ``beta_range`` (segment slopes)
  and ``fit_window_ps`` are reported. Without such a start, D and sigma_D are NaN, ``diffusive`` is
  False and ``no_window_reason`` says why: no slope is reported for motion that is not diffusive.
- Estimator: generalised least squares on at most max_fit_points lags spread over the window,
  D = a / (2 d), with Var(a) = [(X^T S^-1 X)^-1]_aa. S is the covariance of the time-origin-averaged
  MSD of a Gaussian process with stationary increments (Isserlis; as kinisi does for a random walk,
  here for any measured MSD shape): per component, with gamma(tau) the per-component MSD,

      Cov(dx(t, n), dx(t', m)) = [gamma(n-u) + gamma(u+m) - gamma(n-u-m) - gamma(u)] / 2,  u = t' - t
      Cov(MSD(n), MSD(m))      = d / P * 2 / ((T-n)(T-m)) * sum_{t, t'} Cov(dx(t, n), dx(t', m))^2

  gamma is the measured MSD below the window start and the fitted line from there on; the fit is
  iterated three times (OLS start). P independent particles; the same formula with cross-MSDs gives
  the joint covariance of several MSDs (Einstein-Helfand, analysis.conductivity).
- Preconditions of the uncertainty: particles independent and displacements close to Gaussian at the
  window's lags (true in the diffusive regime of a liquid); strong non-Gaussian hopping or correlated
  particles make sigma_D an underestimate. Replicas combine as independent estimates
  (:func:`combine_estimates`).

Finite-size correction (Yeh & Hummer 2004): D_inf = D_PBC + k_B T xi / (6 pi eta L), xi = 2.837297,
valid for a cubic box of edge L and shear viscosity eta only. For a non-cubic box (e.g. a slab box
long in z) the correction depends on the box shape and direction (Kikugawa et al. 2015; Vögele &
Hummer 2016) and needs the anisotropic hydrodynamic sums; it is refused here, and
``finite_size_correction`` records why.
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


def diffusive_window(msd, i_min, i_max, beta_tolerance=0.1, steps_per_octave=4, span=3):
    """First lag i0 >= i_min from which every segment [m, span m] inside [i_min, i_max] (starts a quarter
    octave apart) has a log-log slope within 1 +- beta_tolerance; returns (i0, segment betas from i0)
    or (None, all segment betas). Segments of span 3 rather than one octave: the local beta of a truly
    diffusive MSD must not fail the test on sampling noise at the long lags."""
    starts = []
    m = float(max(i_min, 1))
    while span * m <= i_max:
        starts.append(int(round(m)))
        m *= 2 ** (1.0 / steps_per_octave)
    # a search range shorter than one segment is tested as one segment
    starts = sorted(set(starts)) or [int(max(i_min, 1))]
    lags = np.arange(len(msd), dtype=float)
    betas = [loglog_slope(lags[s:min(span * s, i_max) + 1], msd[s:min(span * s, i_max) + 1]) for s in starts]
    ok = [bool(np.isfinite(b) and abs(b - 1) <= beta_tolerance) for b in betas]
    for k in range(len(starts)):
        if all(ok[k:]):
            return starts[k], betas[k:]
    return None, betas


def _gamma_series(msd_per_component, i0, a, b, N):
    """gamma(tau), tau = 0..N-1: measured below the window start (pre-diffusive, precise), the fitted line
    a tau + b from there on (the measured long-lag MSD is too noisy to build a covariance from)."""
    tau = np.arange(N, dtype=float)
    g = a * tau + b
    g[:i0] = msd_per_component[:i0]
    g[0] = 0.0
    return g


def _pair_covariance(gamma, n, m, N):
    """sum over origin pairs of Cov(dx(t, n), dx(t', m))^2 * 2 / ((N-n)(N-m)) for one component
    (Isserlis), where dx(t, n) = x(t+n) - x(t) of a Gaussian process with stationary increments whose
    (cross-)MSD is gamma: Cov = (gamma(n-u) + gamma(u+m) - gamma(n-u-m) - gamma(u)) / 2, u = t' - t."""
    u = np.arange(-(N - n - 1), N - m)
    count = np.minimum(N - n - 1, N - m - 1 - u) - np.maximum(0, -u) + 1
    g = lambda x: gamma[np.abs(x)]  # noqa: E731  gamma is even in tau
    c = 0.5 * (g(n - u) + g(u + m) - g(n - u - m) - g(u))
    return 2.0 * float(np.sum(np.clip(count, 0, None) * c * c)) / ((N - n) * (N - m))


def msd_covariance(gammas, lag_sets, N, dim, n_independent=1):
    """Covariance matrix of the time-origin-averaged MSDs of jointly Gaussian processes at the lags
    `lag_sets[k]` of series k; gammas[(k, l)] is the per-component cross-MSD of series k and l (module
    docstring). d independent components and `n_independent` independent particles averaged."""
    offsets = np.cumsum([0] + [len(s) for s in lag_sets])
    C = np.zeros((offsets[-1], offsets[-1]))
    for k in range(len(lag_sets)):
        for l in range(k, len(lag_sets)):
            gamma = gammas[(k, l)] if (k, l) in gammas else gammas[(l, k)]
            for i, n in enumerate(lag_sets[k]):
                for j, m in enumerate(lag_sets[l]):
                    if k == l and j < i:
                        continue
                    v = dim * _pair_covariance(gamma, int(n), int(m), N) / n_independent
                    C[offsets[k] + i, offsets[l] + j] = C[offsets[l] + j, offsets[k] + i] = v
    return C


def gls_lines(t_sets, y_sets, cov):
    """Generalised least squares of y_k = a_k t + b_k for every series k with one joint covariance.
    Returns (slopes, covariance of the slopes, chi2, dof)."""
    K = len(t_sets)
    n = sum(len(t) for t in t_sets)
    X = np.zeros((n, 2 * K))
    y = np.concatenate([np.asarray(v, float) for v in y_sets])
    r0 = 0
    for k, t in enumerate(t_sets):
        X[r0:r0 + len(t), 2 * k] = t
        X[r0:r0 + len(t), 2 * k + 1] = 1.0
        r0 += len(t)
    # points a few lags apart are almost perfectly correlated, and a covariance built from noisy model
    # MSDs can be slightly indefinite: whiten with the eigenvalues floored at 1e-9 of the largest
    w, V = np.linalg.eigh(0.5 * (cov + cov.T))
    w = np.maximum(w, 1e-9 * max(float(w.max()), np.finfo(float).tiny))
    W = V.T / np.sqrt(w)[:, None]
    Xw, yw = W @ X, W @ y
    beta, *_ = np.linalg.lstsq(Xw, yw, rcond=None)
    pcov = np.linalg.inv(Xw.T @ Xw)
    resid = yw - Xw @ beta
    idx = np.arange(0, 2 * K, 2)
    return beta[idx], beta[idx + 1], pcov[np.ix_(idx, idx)], float(resid @ resid), n - 2 * K


def fit_lags(i0, i1, max_points):
    """At most `max_points` integer lags spread evenly over [i0, i1] (neighbouring MSD points carry
    almost the same information, and the covariance costs O(points^2 x frames))."""
    return np.unique(np.round(np.linspace(i0, i1, min(max_points, i1 - i0 + 1))).astype(int))


def fit_diffusion(lags_ps, msd_nm2, n_particles=1, dim=3, fit_start_fraction=0.1, fit_end_fraction=0.5,
                  beta_tolerance=0.1, max_fit_points=16) -> dict:
    """Diffusion coefficient from a whole-trajectory MSD by GLS with the MSD covariance (module docstring).

    `n_particles`: independent particles averaged in `msd_nm2`. No diffusive window: D and sigma are
    NaN, ``diffusive`` False and ``no_window_reason`` says why.
    """
    lags = np.asarray(lags_ps, dtype=float)
    msd = np.asarray(msd_nm2, dtype=float)
    N = len(lags)
    s0, s1 = fit_window(N, fit_start_fraction, fit_end_fraction)
    out = {"dimension": dim, "search_window_ps": [float(lags[s0]), float(lags[s1])],
           "beta_tolerance": float(beta_tolerance)}
    i0, betas = diffusive_window(msd, s0, s1, beta_tolerance)
    i1 = s1
    selection = "local beta rule"
    finite_b = [b for b in betas if np.isfinite(b)]
    out["beta_range"] = [float(min(finite_b)), float(max(finite_b))] if finite_b else [float("nan")] * 2
    nan = float("nan")
    if i0 is None or i1 - i0 + 1 < 3:
        out.update({"beta": loglog_slope(lags[s0:s1 + 1], msd[s0:s1 + 1]), "beta_ok": False, "diffusive": False,
                    "no_window_reason": (
                        f"no diffusive window: the local log-log slopes in lags {lags[s0]:.4g}-{lags[s1]:.4g} ps "
                        f"span {out['beta_range'][0]:.3g}-{out['beta_range'][1]:.3g}, none from a start onwards "
                        f"all within 1 +- {beta_tolerance:g} (run longer, or the motion is sub/superdiffusive)"),
                    "fit_window_ps": [nan, nan], "window_selection": selection,
                    "D_nm2_per_ps": nan, "D_sigma_nm2_per_ps": nan, "D_cm2_per_s": nan, "D_sigma_cm2_per_s": nan,
                    "uncertainty_method": "none (no diffusive window)", "fit_chi2_per_dof": nan})
        return out
    sel = fit_lags(i0, i1, max_fit_points)
    a, b = linear_fit(lags[sel], msd[sel])[:2]  # OLS start; then GLS with the covariance of that model, twice
    for _ in range(3):
        gamma = _gamma_series(msd / dim, i0, a * (lags[1] - lags[0]) / dim, b / dim, N)
        cov = msd_covariance({(0, 0): gamma}, [sel], N, dim, n_particles)
        (a,), (b,), pcov, chi2, dof = gls_lines([lags[sel]], [msd[sel]], cov)
    D, sD = a / (2 * dim), float(np.sqrt(pcov[0, 0])) / (2 * dim)
    beta = loglog_slope(lags[i0:i1 + 1], msd[i0:i1 + 1])
    out.update({
        "beta": beta, "beta_ok": bool(abs(beta - 1) <= beta_tolerance), "diffusive": True, "no_window_reason": None,
        "fit_window_ps": [float(lags[i0]), float(lags[i1])], "window_selection": selection,
        "D_nm2_per_ps": float(D), "D_sigma_nm2_per_ps": sD,
        "D_cm2_per_s": float(nm2_per_ps_to_cm2_per_s(D)), "D_sigma_cm2_per_s": float(nm2_per_ps_to_cm2_per_s(sD)),
        "uncertainty_method": (f"GLS of the whole-trajectory MSD at {len(sel)} lags with its Gaussian covariance "
                               f"(Isserlis, from the measured MSD; {n_particles} independent particles)"),
        "fit_chi2_per_dof": chi2 / dof if dof > 0 else nan,
    })
    return out


class MSD(AnalysisBase):
    """MSD and D of the atoms of `group` (``compound="atoms"``) or of their residues' centres of mass.

    Parameters
    ----------
    group : AtomGroup
    compound : "atoms" | "residues" | "molecules"
    msd_type : "xyz" (default), "xy", "z", ...
    unwrap : bool, unwrap by minimum-image displacement accumulation (module docstring)
    fit_start_fraction, fit_end_fraction, beta_tolerance, max_fit_points : see fit_diffusion
    viscosity_Pa_s, temperature_K : optional, add the Yeh-Hummer corrected D (cubic boxes only; any
        other shape is refused with the reason in ``finite_size_correction``)

    Results: ``lagtimes_ps``, ``msd_nm2``, ``positions_nm`` (T, P, 3 unwrapped), ``dt_ps``,
    ``n_particles``, ``mean_volume_nm3``, ``mean_box_nm``, ``max_step_fraction`` and everything of
    :func:`fit_diffusion` (``D_nm2_per_ps``, ``D_sigma_nm2_per_ps``, ``D_cm2_per_s``, ``beta``,
    ``diffusive``, ``no_window_reason`` ...).
    """

    def __init__(self, group, compound="atoms", msd_type="xyz", unwrap=True, fit_start_fraction=0.1,
                 fit_end_fraction=0.5, beta_tolerance=0.1, max_fit_points=16, viscosity_Pa_s=None, temperature_K=None, **kwargs):
        super().__init__(group.universe.trajectory, **kwargs)
        self.group = check_atomgroup(group, "MSD group")
        if msd_type not in MSD_TYPES:
            raise ConfigError(one_of("msd_type", msd_type, MSD_TYPES))
        self.compound = compound
        self.msd_type = msd_type
        self._dims = ["xyz".index(c) for c in msd_type]
        self.unwrap = unwrap
        self.fit_kwargs = dict(fit_start_fraction=fit_start_fraction, fit_end_fraction=fit_end_fraction,
                               beta_tolerance=beta_tolerance, max_fit_points=max_fit_points)
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
        r.update(fit_diffusion(r.lagtimes_ps, r.msd_nm2, r.n_particles, dim=len(self._dims), **self.fit_kwargs))
        if self.viscosity_Pa_s is not None:
            if self.temperature_K is None:
                raise ConfigError("temperature_K: required with viscosity_Pa_s for the Yeh-Hummer correction")
            r.update(finite_size_correction(r.D_nm2_per_ps, r.mean_box_nm, self.viscosity_Pa_s, self.temperature_K))


def finite_size_correction(D_nm2_per_ps, box_nm, viscosity_Pa_s, temperature_K, cubic_tolerance=0.01) -> dict:
    """Yeh-Hummer corrected D for a cubic box; for any other shape the correction is refused (NaN) and
    ``finite_size_correction`` says why (module docstring)."""
    box = np.asarray(box_nm, dtype=float)
    if not (np.all(np.isfinite(box)) and np.ptp(box) <= cubic_tolerance * box.mean()):
        return {"finite_size_correction": (
                    f"not applied: box edges {np.round(box, 4).tolist()} nm are not cubic (within "
                    f"{100 * cubic_tolerance:g} %); Yeh-Hummer holds for cubic boxes only, a slab or other "
                    "anisotropic box needs the shape-dependent correction (Kikugawa et al. 2015, Vogele & "
                    "Hummer 2016)"),
                "yeh_hummer_correction_nm2_per_ps": float("nan"), "D_corrected_nm2_per_ps": float("nan"),
                "D_corrected_cm2_per_s": float("nan")}
    corr = yeh_hummer_correction_nm2_per_ps(float(box.mean()), viscosity_Pa_s, temperature_K)
    Dc = D_nm2_per_ps + corr
    return {"finite_size_correction": f"Yeh-Hummer, cubic box L = {box.mean():.4g} nm",
            "yeh_hummer_correction_nm2_per_ps": corr, "D_corrected_nm2_per_ps": float(Dc),
            "D_corrected_cm2_per_s": float(nm2_per_ps_to_cm2_per_s(Dc))}


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
