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

- Window rule (the slope, not beta): a linear MSD with an offset, 2 d D t + c (a particle rattling in a
  cage whose centre diffuses), has a local beta = d ln MSD / d ln t below 1 at every lag, although its
  slope is exactly 2 d D; a power law t^beta (sub-diffusion) has a slope that keeps drifting. So the
  window is the late part of the search range [fit_start_fraction, fit_end_fraction] x longest lag
  over which the slope of MSD against t is constant within its errors. On lags a quarter octave apart
  (:func:`constant_slope_window`), for each start from the earliest, MSD on [start, end] is fitted by
  GLS (covariance below) with y = a t + c + q t ln(t / t_end), q/a = d ln(slope)/d ln t (= beta - 1 of
  a power law to first order), and the GLS slope of the whole window is compared with that of its
  late half. The window starts at the first start where |q/a| <= beta_tolerance (0.1), q/a is within
  2.5 standard errors of 0, its standard error is at most beta_tolerance (so that a power law with
  |beta - 1| >= 2.5 beta_tolerance would have failed the test: otherwise "unresolved", D refused) and the two slopes
  agree within 2.5 standard errors, and it ends at the end of the range; it must span a factor 2 in lag (an octave) and 4 grid lags.
  Once an earlier start failed (the slope shown drifting, e.g. a cage relaxing), the drift decays
  gradually and a window in its tail passes these tests with D biased by sigma_D or more; from there on
  a start is also required to give a slope within one standard error of the slope of every later start
  (Lepski's balancing principle: |a_k - a_j| <= sigma_a_j for all later starts j; ``later_slope_z``),
  and the largest such change |a_k - a_j| (``later_slope_change``, relative) is added to sigma_D in
  quadrature as the systematic error of the window choice (without it 35 of 48 such D were within
  2 sigma on the cage below; with it 47 of 48).
  A cage whose time is 1/10 of the run therefore needs the search range to reach past several cage
  times plus an octave: fit_end_fraction 0.99 (LONG_CAGE_END_FRACTION; GLS weighs the noisy long lags
  down, and Brownian, short-cage and correlated walks give the same D and coverage there as at 0.5). At
  the default 0.5 every start lies in the cage's tail: D is refused as sub-diffusive, and the reason
  names the search range. No such start: D and sigma_D
  are NaN, ``diffusive`` False, ``beta_flag`` "sub-diffusive" (slope falling), "super-diffusive"
  (rising) or "unresolved" (straight within errors too large to tell) and ``no_window_reason`` says why. ``beta`` (log-log slope over the window) is information:
  below 1 - beta_tolerance with an accepted window it is flagged "cage offset" (c > 0), above
  1 + beta_tolerance "negative offset". ``slope_tests`` lists every start tried, ``offset_nm2`` is c.
- Power law at every lag (:func:`power_law_test`, ``power_law``): fractional Brownian motion has
  MSD = A t^beta from the first lag on, so a late window, whose curvature error is large, can look
  straight by chance. ln MSD is fitted on ln t over lags 1..end of the search range (half an octave
  apart) by GLS with the covariance of that power law; when the power law is not rejected (chi2
  p >= 1e-3) and |beta - 1| exceeds beta_tolerance by more than 2.5 standard errors, D is refused as
  "sub-diffusive" ("super-diffusive"). A cage, a ballistic start or any crossover bends ln MSD(ln t)
  and is rejected by this test by many standard errors (chi2/dof 8-270 for the test cases), so it only
  ever removes a D.
- Drift (:func:`drift_test`, with positions): the net displacement of the particles' mean position
  against the spread independent particles with this MSD give it; ``drift`` and a flag when p < 1e-3.
- Estimator: generalised least squares on at most max_fit_points lags spread over the window,
  D = a / (2 d), with Var(a) = [(X^T S^-1 X)^-1]_aa. S is the covariance of the time-origin-averaged
  MSD of a Gaussian process with stationary increments (Isserlis; as kinisi does for a random walk,
  here for any measured MSD shape): per component, with gamma(tau) the per-component MSD,

      Cov(dx(t, n), dx(t', m)) = [gamma(n-u) + gamma(u+m) - gamma(n-u-m) - gamma(u)] / 2,  u = t' - t
      Cov(MSD(n), MSD(m))      = d / P * 2 / ((T-n)(T-m)) * sum_{t, t'} Cov(dx(t, n), dx(t', m))^2

  gamma is the measured MSD below the window start and the fitted line from there on; the fit is
  iterated three times (OLS start). Measured limits (tests/test_analysis_msd.py, 1000 frames): a cage
  whose time is 1/50 of the run (500 particles) is recovered within 3 % and 2 sigma. At 1/10 of the run,
  searching to 0.99 of it, the window-choice bias stays below sigma_D (Lepski): 80 seeds of 4,000
  particles (sigma_D 2 %) give 79 D, 75 of them within 5 % and 2 sigma, mean error +1.1 %; 500 particles
  (sigma_D 5 %) give 37 D of 40, 34 within 2 sigma, mean error +3.4 %. Within 5 % therefore needs data
  that give sigma_D of about 2 %.
  P independent particles; the same formula with cross-MSDs gives
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
from scipy.stats import chi2 as chi2_dist

from spemd.errors import ConfigError, InputError, one_of
from spemd.units import (BOLTZMANN_J_PER_K, M_PER_CM, M_PER_NM, angstrom_to_nm, cm2_per_s_to_nm2_per_ps,
                           nm2_per_ps_to_cm2_per_s)

from spemd.analysis._common import (Unwrapper, box_volume_nm3, check_atomgroup, check_finite, compound_centres, compound_layout,
                              frame_spacing_ps, linear_fit)

MSD_TYPES = ("xyz", "xy", "xz", "yz", "x", "y", "z")
YEH_HUMMER_XI = 2.837297
GRID_RATIO = 2 ** 0.25  # lags of the straight-line test: a quarter octave apart
MIN_WINDOW_RATIO = 2.0  # the window spans at least an octave of lag, or a drifting slope could hide in it
SLOPE_TEST_Z = 2.5  # curvature and late-half slope change within this many standard errors of 0
DRIFT_ALPHA = 1e-3  # net displacement of the mean position flagged as drift below this p-value
RESOLUTION_FRACTION = 2.5  # the slope drift's standard error must be at most this x beta_tolerance
SETTLED_Z = 1.0  # after a start with a drifting slope: slope within this many sigma of each later start's
POWER_LAW_ALPHA = 1e-3  # a single power law over every lag is rejected below this chi2 p-value
POWER_LAW_GRID_RATIO = 2 ** 0.5  # lags of the power-law test: half an octave apart
LONG_CAGE_END_FRACTION = 0.99  # search-range end that a cage of 1/10 of the run needs (module docstring)


#: working memory of one block of msd_fft's columns (bytes): the FFT buffers of a block are ~10 x 8 bytes per
#: frame and column, so the block narrows as the trajectory grows and the peak memory stays flat
FFT_BLOCK_BYTES = 64 * 2**20


def msd_fft(positions, chunk_columns: int | None = None) -> np.ndarray:
    """Particle-averaged MSD for every lag 0..T-1 of `positions` (T, P, d) by the FFT algorithm, over blocks
    of `chunk_columns` coordinate columns (default: as many as fit FFT_BLOCK_BYTES)."""
    from scipy.fft import irfft, next_fast_len, rfft

    x = np.asarray(positions, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    T, P = x.shape[0], x.shape[1]
    cols = x.reshape(T, -1)
    n = next_fast_len(2 * T, real=True)
    if chunk_columns is None:
        chunk_columns = max(16, FFT_BLOCK_BYTES // (80 * n))
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


def _lag_grid(i_min, i_max, ratio=GRID_RATIO):
    """Integer lags from i_min to i_max (both included) a factor `ratio` apart."""
    grid, m = [], float(max(i_min, 1))
    while m < i_max:
        grid.append(int(round(m)))
        m *= ratio
    grid.append(int(i_max))
    return np.unique(grid)


def constant_slope_window(lags, msd, s0, s1, n_particles, dim, max_drift=0.1):
    """Earliest start of a window [start, s1] on the lag grid over which MSD is a straight line within its
    errors (module docstring). Returns (start index or None, the tests run: one dict per start)."""
    N = len(msd)
    grid = _lag_grid(s0, s1)
    # covariance model: the measured MSD below the search range, a straight line (OLS) inside it
    a, b = linear_fit(lags[s0:s1 + 1], msd[s0:s1 + 1])[:2]
    gamma = _gamma_series(msd / dim, s0, a * (lags[1] - lags[0]) / dim, b / dim, N)
    cov = msd_covariance({(0, 0): gamma}, [grid], N, dim, n_particles)
    tests = []
    starts = [k for k in range(len(grid)) if len(grid) - k >= 4 and grid[-1] >= MIN_WINDOW_RATIO * grid[k]]
    rows = {}  # GLS slope of the window from each start, as a row over the whole grid
    for k in starts:
        rows[k] = np.zeros(len(grid))
        rows[k][k:] = _gls_rows(np.column_stack([lags[grid[k:]], np.ones(len(grid) - k)]), cov[k:, k:])[0]
    for k in starts:
        g = grid[k:]
        t, y, C = lags[g], msd[g], cov[k:, k:]
        q, sq = _curvature(t, y, C)
        late = t >= np.sqrt(t[0] * t[-1])
        if late.sum() < 2:
            late[-2:] = True
        # slope of the whole window minus that of its late half: is D still moving as the start moves on?
        h_all = rows[k][k:]
        h_late = np.zeros_like(h_all)
        h_late[late] = _gls_rows(np.column_stack([t[late], np.ones(late.sum())]), C[np.ix_(late, late)])[0]
        dh = h_all - h_late
        a_w, sd = float(h_all @ y), float(np.sqrt(max(dh @ C @ dh, 0.0)))
        test = {"start_ps": float(t[0]), "curvature": q, "curvature_se": sq,
                "curvature_z": q / sq if sq > 0 else float("nan"),
                "late_slope_change": float(-(dh @ y) / a_w) if a_w > 0 else float("nan"),
                "late_slope_z": float(-(dh @ y) / sd) if sd > 0 else float("nan")}
        test["straight"] = bool(abs(test["curvature_z"]) <= SLOPE_TEST_Z and abs(test["late_slope_z"]) <= SLOPE_TEST_Z
                                and abs(q) <= max_drift)
        # "not shown curved" is not "shown straight": the drift must be known well enough that a power law
        # with |beta - 1| >= 2.5 * max_drift would have failed the test (a few ions over a few ps never are)
        test["resolved"] = bool(np.isfinite(sq) and sq <= RESOLUTION_FRACTION * max_drift)
        # once an earlier start showed the slope drifting (a cage relaxing), the drift decays gradually and a
        # window in its tail passes the tests above with D biased by sigma_D or more: from there on the slope
        # must also agree with that of every later start within the later one's standard error (Lepski's
        # balancing of bias against variance)
        later, change = [], []
        for j in starts[starts.index(k) + 1:]:
            dh = rows[k] - rows[j]
            sd_j = float(np.sqrt(max(rows[j] @ cov @ rows[j], 0.0)))
            later.append(float(dh @ msd[grid]) / sd_j if sd_j > 0 else 0.0)
            change.append(abs(float(dh @ msd[grid]) / a_w) if a_w > 0 else float("nan"))
        test["later_slope_z"] = max(later, key=abs) if later else 0.0
        test["later_slope_change"] = max(change) if change else 0.0
        test["after_drift"] = any(not u["straight"] and u["resolved"] for u in tests)
        if test["after_drift"] and abs(test["later_slope_z"]) > SETTLED_Z:
            test["straight"] = False
        tests.append(test)
        if test["straight"] and test["resolved"]:
            return int(g[0]), tests
    return None, tests


def power_law_test(lags, msd, s1, n_particles, dim):
    """Is the MSD one power law A t^beta at every lag 1..s1 (fractional Brownian motion)? GLS of ln MSD on
    ln t at lags half an octave apart, with the MSD covariance of the OLS power law (relative covariance
    C_ij / (m_i m_j), delta method). Returns beta, its standard error,
    chi2/dof and the chi2 p-value of the power law. A cage, a ballistic start or any crossover to
    diffusion bends ln MSD(ln t) and is rejected here by many standard errors."""
    N = len(msd)
    g = _lag_grid(1, s1, POWER_LAW_GRID_RATIO)
    t, y = lags[g], msd[g]
    nan = float("nan")
    if len(g) < 4 or np.any(y <= 0):
        return {"beta": nan, "beta_se": nan, "chi2_per_dof": nan, "p": nan, "lags_ps": [float(lags[1]), float(lags[s1])]}
    X = np.column_stack([np.ones_like(t), np.log(t)])
    coef = np.linalg.lstsq(X, np.log(y), rcond=None)[0]
    tau = np.arange(N, dtype=float) * (lags[1] - lags[0])
    gamma = np.exp(coef[0]) * tau ** coef[1] / dim
    model = np.exp(X @ coef)
    cov = msd_covariance({(0, 0): gamma}, [g], N, dim, n_particles) / np.outer(model, model)
    H = _gls_rows(X, cov)
    coef = H @ np.log(y)
    w, V = np.linalg.eigh(0.5 * (cov + cov.T))
    w = np.maximum(w, 1e-9 * float(w.max()))
    chi2 = float(np.sum((V.T @ (np.log(y) - X @ coef)) ** 2 / w))
    dof = len(g) - 2
    return {"beta": float(coef[1]), "beta_se": float(np.sqrt(max(H[1] @ cov @ H[1], 0.0))),
            "chi2_per_dof": chi2 / dof, "p": float(chi2_dist.sf(chi2, dof)), "lags_ps": [float(lags[1]), float(lags[s1])]}


def _gls_rows(X, cov):
    """Rows H of the GLS estimator beta = H y for design X and covariance cov (eigenvalues floored at 1e-9
    of the largest: MSD points a few lags apart are almost perfectly correlated)."""
    w, V = np.linalg.eigh(0.5 * (cov + cov.T))
    w = np.maximum(w, 1e-9 * max(float(w.max()), np.finfo(float).tiny))
    Ci = (V / w) @ V.T
    return np.linalg.solve(X.T @ Ci @ X, X.T @ Ci)


def _curvature(t, y, cov):
    """GLS fit of y = a t + c + q t ln(t / t_end) (q / a = beta - 1 of a power law to first order): (q / a,
    its standard error). A straight line has q = 0."""
    X = np.column_stack([t, np.ones_like(t), t * np.log(t / t[-1])])
    H = _gls_rows(X, cov)
    a, q = float(H[0] @ y), float(H[2] @ y)
    if a <= 0:
        return float("nan"), float("nan")
    return q / a, float(np.sqrt(max(H[2] @ cov @ H[2], 0.0))) / a


def local_slopes(lags, msd, i0, i1):
    """Chord slopes of MSD against t (nm^2/ps) and log-log slopes beta between neighbouring grid lags."""
    g = _lag_grid(i0, i1)
    t, y = lags[g], msd[g]
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.diff(np.log(y)) / np.diff(np.log(t))
    return np.diff(y) / np.diff(t), beta


def drift_test(positions_nm, msd, lags, s1, alpha=DRIFT_ALPHA):
    """Net displacement of the particles' mean position over the run against the spread that independent
    particles with this MSD give it: chi2 = sum_c dR_c^2 / (MSD_c(t_run) / P), d degrees of freedom,
    MSD_c(t_run) extrapolated linearly from the MSD at the end of the search range (s1). A drift (flow,
    a species moving as one) makes chi2 large; ``drift_flag`` when p < `alpha`."""
    x = np.asarray(positions_nm, dtype=float)
    T, P, d = x.shape
    dR = x[-1].mean(axis=0) - x[0].mean(axis=0)
    var = msd[s1] / d * (lags[-1] / lags[s1]) / P
    chi2 = float(np.sum(dR**2) / var) if var > 0 else float("nan")
    p = float(chi2_dist.sf(chi2, d)) if np.isfinite(chi2) else float("nan")
    return {"net_displacement_nm": dR.tolist(), "chi2": chi2, "dof": int(d), "p": p,
            "drift_flag": bool(np.isfinite(p) and p < alpha)}


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
                  beta_tolerance=0.1, max_fit_points=16, positions_nm=None) -> dict:
    """Diffusion coefficient from a whole-trajectory MSD by GLS with the MSD covariance (module docstring).

    `n_particles`: independent particles averaged in `msd_nm2`. No window with a constant slope: D and
    sigma are NaN, ``diffusive`` False and ``no_window_reason`` says why. `positions_nm` (T, P, d),
    optional: adds the drift test (``drift``). ``flags`` lists what a reader must know (beta flag, drift).
    """
    lags = np.asarray(lags_ps, dtype=float)
    msd = np.asarray(msd_nm2, dtype=float)
    N = len(lags)
    s0, s1 = fit_window(N, fit_start_fraction, fit_end_fraction)
    out = {"dimension": dim, "search_window_ps": [float(lags[s0]), float(lags[s1])],
           "beta_tolerance": float(beta_tolerance), "window_selection": "constant slope (GLS straight-line test)"}
    nan = float("nan")
    flags = []
    if positions_nm is not None:
        out["drift"] = drift_test(positions_nm, msd, lags, s1)
        if out["drift"]["drift_flag"]:
            flags.append(f"drift: the mean position moved {np.linalg.norm(out['drift']['net_displacement_nm']):.3g} nm "
                         f"over the run, more than independent diffusion allows (p = {out['drift']['p']:.2g}); "
                         "MSD and D include the drift")
    i0, tests = (constant_slope_window(lags, msd, s0, s1, n_particles, dim, beta_tolerance) if s1 - s0 >= 2
                 else (None, []))
    out["slope_tests"] = tests
    # a single power law at every lag with |beta - 1| > beta_tolerance (significantly) has no diffusive
    # regime, whatever a late window's straight-line test, short of resolution, says
    pl = out["power_law"] = power_law_test(lags, msd, s1, n_particles, dim)
    power_law = bool(pl["p"] >= POWER_LAW_ALPHA and abs(pl["beta"] - 1) - SLOPE_TEST_Z * pl["beta_se"] > beta_tolerance)
    if power_law:
        i0 = None
    i1 = s1
    slopes, betas = local_slopes(lags, msd, s0 if i0 is None else i0, i1)
    finite_b = betas[np.isfinite(betas)]
    out["beta_range"] = [float(finite_b.min()), float(finite_b.max())] if len(finite_b) else [nan, nan]
    out["local_slopes_nm2_per_ps"] = [float(v) for v in slopes]
    # consistent with a line but too noisy to tell: the data's fault, not the motion's
    unresolved = [t for t in tests if not t["resolved"] and abs(t["curvature_z"]) <= SLOPE_TEST_Z
                  and abs(t["late_slope_z"]) <= SLOPE_TEST_Z]
    if power_law:
        beta = loglog_slope(lags[s0:s1 + 1], msd[s0:s1 + 1])
        kind = "sub-diffusive" if pl["beta"] < 1 else "super-diffusive"
        why = (f"no diffusive window: the MSD is one power law t^beta at every lag {pl['lags_ps'][0]:.4g}-"
               f"{pl['lags_ps'][1]:.4g} ps (beta = {pl['beta']:.3g} +- {pl['beta_se']:.2g}, chi2/dof "
               f"{pl['chi2_per_dof']:.2g}, p = {pl['p']:.2g}): its slope keeps changing, d ln(slope)/d ln t = "
               f"beta - 1 at every lag ({kind}, e.g. fractional Brownian motion); no D")
    elif i0 is None and unresolved:
        beta = loglog_slope(lags[s0:s1 + 1], msd[s0:s1 + 1])
        best = min(unresolved, key=lambda t: t["curvature_se"])
        kind = "unresolved"
        why = (f"no diffusive window: over lags {lags[s0]:.4g}-{lags[s1]:.4g} ps the MSD is consistent with a "
               f"straight line but cannot be told from a power law: its slope drift d ln(slope)/d ln t is "
               f"{best['curvature']:.2g} +- {best['curvature_se']:.2g} (best start {best['start_ps']:.4g} ps; needs an "
               f"error <= {RESOLUTION_FRACTION * beta_tolerance:g}); run longer or with more particles")
    elif i0 is None:
        beta = loglog_slope(lags[s0:s1 + 1], msd[s0:s1 + 1])
        kind = "sub-diffusive" if len(slopes) > 1 and slopes[-1] < slopes[0] else "super-diffusive"
        best = min(tests, key=lambda t: max(abs(t["curvature_z"]), abs(t["late_slope_z"]))) if tests else None
        why = (f"no diffusive window: the slope of MSD(t) keeps changing over lags {lags[s0]:.4g}-{lags[s1]:.4g} ps (local slopes "
               f"{slopes.min():.3g}-{slopes.max():.3g} nm^2/ps, {kind}): no window of at least "
               f"{MIN_WINDOW_RATIO:g}x in lag ending there is a straight line within errors"
               + (f" (best start {best['start_ps']:.4g} ps: slope drift d ln(slope)/d ln t = {best['curvature']:.2g} "
                  f"({best['curvature_z']:.2g} standard errors; limits |drift| <= {beta_tolerance:g} and "
                  f"{SLOPE_TEST_Z:g} errors), late-half slope change {best['late_slope_z']:.2g} errors"
                  + (f", slope {best['later_slope_z']:.2g} errors of a later start's from it (limit {SETTLED_Z:g} "
                     "after a drifting start)" if best["after_drift"] and abs(best["later_slope_z"]) > SETTLED_Z else "") + ")" if best
                  else " (search range too short)")
               + "; run longer, or the motion is not diffusive"
               + (f" (a slope still falling at {fit_end_fraction:g} of the run can be a cage relaxing: one whose time is "
                  f"1/10 of the run needs the search range to 0.99, fit_end_fraction / config "
                  f"analysis.msd_fit_end_fraction)" if kind == "sub-diffusive" and fit_end_fraction < LONG_CAGE_END_FRACTION
                  else ""))
    if i0 is None:
        flags.append(f"{kind}: D refused")
        out.update({"beta": beta, "beta_ok": False, "beta_flag": kind, "diffusive": False, "no_window_reason": why,
                    "fit_window_ps": [nan, nan], "offset_nm2": nan, "flags": flags, "fit_lags": [],
                    "D_nm2_per_ps": nan, "D_sigma_nm2_per_ps": nan, "D_cm2_per_s": nan, "D_sigma_cm2_per_s": nan,
                    "uncertainty_method": "none (no window with a constant slope)", "fit_chi2_per_dof": nan})
        return out
    sel = fit_lags(i0, i1, max_fit_points)
    a, b = linear_fit(lags[sel], msd[sel])[:2]  # OLS start; then GLS with the covariance of that model, twice
    for _ in range(3):
        gamma = _gamma_series(msd / dim, i0, a * (lags[1] - lags[0]) / dim, b / dim, N)
        cov = msd_covariance({(0, 0): gamma}, [sel], N, dim, n_particles)
        (a,), (b,), pcov, chi2, dof = gls_lines([lags[sel]], [msd[sel]], cov)
    D, sD = a / (2 * dim), float(np.sqrt(pcov[0, 0])) / (2 * dim)
    # a window taken after a drifting start may still carry some of the drift (Lepski allows up to one
    # sigma of a later start): its largest slope change against later starts is added as a systematic error
    chosen = next(t for t in tests if t["start_ps"] == float(lags[i0]))
    window_syst = chosen["later_slope_change"] * D if chosen["after_drift"] else 0.0
    sD = float(np.hypot(sD, window_syst))
    beta = loglog_slope(lags[i0:i1 + 1], msd[i0:i1 + 1])
    beta_ok = bool(abs(beta - 1) <= beta_tolerance)
    beta_flag = None if beta_ok else ("cage offset" if beta < 1 else "negative offset")
    if beta_flag:
        flags.append(f"{beta_flag}: beta {beta:.3g} over the window while the slope is constant "
                     f"(MSD = {2 * dim}Dt + c, c = {b:.3g} nm^2); D from the slope")
    out.update({
        "beta": beta, "beta_ok": beta_ok, "beta_flag": beta_flag, "diffusive": True, "no_window_reason": None,
        "fit_window_ps": [float(lags[i0]), float(lags[i1])], "offset_nm2": float(b), "flags": flags,
        "fit_lags": [int(k) for k in sel],
        "D_nm2_per_ps": float(D), "D_sigma_nm2_per_ps": sD,
        "D_cm2_per_s": float(nm2_per_ps_to_cm2_per_s(D)), "D_sigma_cm2_per_s": float(nm2_per_ps_to_cm2_per_s(sD)),
        "uncertainty_method": (f"GLS of the whole-trajectory MSD at {len(sel)} lags with its Gaussian covariance "
                               f"(Isserlis, from the measured MSD; {n_particles} independent particles)"
                               + (f", plus a window-choice systematic {window_syst:.3g} nm^2/ps (slope change against "
                                  "later starts, the window following a drifting start)" if window_syst > 0 else "")),
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
        check_finite(self._ts, (self.group,), "MSD trajectory")
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
        r.update(fit_diffusion(r.lagtimes_ps, r.msd_nm2, r.n_particles, dim=len(self._dims), positions_nm=pos,
                               **self.fit_kwargs))
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
