"""D from a whole-trajectory MSD: the diffusive window, the power-law and drift tests, GLS with the MSD's
covariance (used by analysis.msd.MSD and, with cross-MSDs, by analysis.conductivity).

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
  iterated three times (OLS start). Measured limits (tests/test_analysis_msd_fit.py, 1000 frames): a cage
  whose time is 1/50 of the run (500 particles) is recovered within 3 % and 2 sigma. At 1/10 of the run,
  searching to 0.99 of it, the window-choice bias stays below sigma_D (Lepski): 80 seeds of 4,000
  particles (sigma_D 2 %) give 79 D, 75 of them within 5 % and 2 sigma, mean error +1.3 %; 500 particles
  (sigma_D 5 %) give 37 D of 40, 34 within 2 sigma, mean error +3.4 %. Within 5 % therefore needs data
  that give sigma_D of about 2 %.
  P independent particles; the same formula with cross-MSDs gives
  the joint covariance of several MSDs (Einstein-Helfand, analysis.conductivity).
- Preconditions of the uncertainty: particles independent and displacements close to Gaussian at the
  window's lags (true in the diffusive regime of a liquid); strong non-Gaussian hopping or correlated
  particles make sigma_D an underestimate. Replicas combine as independent estimates
  (:func:`combine_estimates`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2 as chi2_dist

from spemd.errors import ConfigError, InputError
from spemd.units import nm2_per_ps_to_cm2_per_s

from spemd.analysis._common import linear_fit

GRID_RATIO = 2 ** 0.25  # lags of the straight-line test: a quarter octave apart
MIN_WINDOW_RATIO = 2.0  # the window spans at least an octave of lag, or a drifting slope could hide in it
SLOPE_TEST_Z = 2.5  # curvature and late-half slope change within this many standard errors of 0
DRIFT_ALPHA = 1e-3  # net displacement of the mean position flagged as drift below this p-value
RESOLUTION_FRACTION = 2.5  # the slope drift's standard error must be at most this x beta_tolerance
SETTLED_Z = 1.0  # after a start with a drifting slope: slope within this many sigma of each later start's
POWER_LAW_ALPHA = 1e-3  # a single power law over every lag is rejected below this chi2 p-value
POWER_LAW_GRID_RATIO = 2 ** 0.5  # lags of the power-law test: half an octave apart
LONG_CAGE_END_FRACTION = 0.99  # search-range end that a cage of 1/10 of the run needs (module docstring)


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
