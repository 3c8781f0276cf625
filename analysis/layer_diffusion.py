"""Lateral diffusion of Na+ in the interfacial layer and in the film centre, from a survival-conditioned MSD.

Layers by the signed face distance d (spemd.slab.face_distance_nm): ``interface`` 0 <= d < L and
``centre`` d >= L (L = ``layer_nm``, 1 nm); inside the slab's extent (d < 0) an ion is in neither.
With 1_i(t, t+k) = 1 only when ion i is in the layer in every frame t..t+k (Liu, Harder & Berne,
J. Phys. Chem. B 108, 6595 (2004)), the layer's lateral MSD at lag k is

    MSD_xy(k) = sum_t sum_i 1_i(t, t+k) |r_xy,i(t+k) - r_xy,i(t)|^2 / sum_t sum_i 1_i(t, t+k),

over unwrapped x/y (analysis/_common.Unwrapper), and the survival probability

    P(k) = sum_t sum_i 1_i(t, t+k) / sum_t sum_i 1_i(t, t),   origins t <= T-1-k.

An ion counts for a lag only while it stays in its layer, so an ion that crosses into a faster or slower
layer does not carry that layer's motion into this one (labelling by the origin's layer does).
D_xy = slope / 4 of a straight line through MSD_xy over the fit window: the lags k with
P(k) >= ``min_survival`` and at least ``min_pairs`` surviving (ion, origin) pairs, up to ``fit_end_fraction``
of the trajectory (longer lags have too few origins), from ``fit_start_fraction`` of the longest such lag
on. The MSD is evaluated on a lag grid (every lag up to 32, then 8 per octave), from the frames an ion
still has to spend in its layer, so the cost is (number of lags) x frames x ions. The window is diffusive
when it has >= 3 lags and the log-log slope beta of MSD_xy over it lies within 1 +- ``beta_tolerance``;
otherwise D is null with the reason. The error is the standard error of D over ``N_BLOCKS`` groups of
ions (ion index mod 5) fitted on the same window.

Preconditions: a slab box, periodic box every frame, equally spaced frames, no ion moving more than half
the box between frames (the unwrapping), z the slab normal.
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase

from spemd.errors import ConfigError
from spemd.units import angstrom_to_nm

from spemd.analysis._common import Unwrapper, check_atomgroup, frame_spacing_ps, linear_fit
from spemd.analysis._layers import N_BLOCKS, face_distances, frame_geometry
from spemd.analysis.msd_fit import loglog_slope

LAYERS = ("interface", "centre")


def lag_grid(n_frames: int, max_lag: int, dense: int = 32, per_octave: int = 8) -> np.ndarray:
    """Lags 0..max_lag: every lag up to `dense`, then `per_octave` per octave (the cost grows with the lags)."""
    top = max(0, min(int(max_lag), n_frames - 1))
    sparse = np.unique(np.round(dense * 2.0 ** (np.arange(1, 64) / per_octave)).astype(int))
    return np.unique(np.r_[np.arange(min(dense, top) + 1), sparse[sparse <= top]])


def layer_sums(xy_nm, labels, layer: int, lags, conditioned: bool = True):
    """Per lag and ion: (sum of |dr_xy|^2, number of counted origins), and per lag the origins in the layer.

    Conditioned: origins t with the ion in the layer in every frame t..t+k (module docstring); not
    conditioned: origins with the ion in the layer at t. Shapes (n_lags, N), (n_lags, N), (n_lags,)."""
    xy = np.asarray(xy_nm, dtype=float)
    inside = np.asarray(labels) == layer
    T, N = inside.shape
    stay = np.zeros((T + 1, N), dtype=np.int64)  # stay[t]: consecutive frames from t on spent in the layer
    for t in range(T - 1, -1, -1):
        stay[t] = (stay[t + 1] + 1) * inside[t]
    n_origin = np.cumsum(inside.sum(axis=1))
    lags = np.asarray(lags, dtype=int)
    sq, cnt, base = np.zeros((len(lags), N)), np.zeros((len(lags), N)), np.zeros(len(lags))
    for j, k in enumerate(lags):
        alive = stay[:T - k] > k if conditioned else inside[:T - k]
        disp2 = np.sum((xy[k:] - xy[:T - k]) ** 2, axis=2)
        sq[j] = np.sum(disp2 * alive, axis=0)
        cnt[j] = alive.sum(axis=0)
        base[j] = n_origin[T - 1 - k]
    return sq, cnt, base


def layer_msd(xy_nm, labels, layer: int, lags=None, conditioned: bool = True):
    """(msd_nm2, n_pairs, survival) at `lags` (default every lag) of the ions of `labels` == `layer`:
    MSD_xy and P(k) of the module docstring (NaN where no pair is left)."""
    lags = np.arange(len(xy_nm)) if lags is None else lags
    sq, cnt, base = layer_sums(xy_nm, labels, layer, lags, conditioned)
    n = cnt.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sq.sum(axis=1) / n, n, n / base


def fit_layer(lags_ps, msd, n_pairs, surv, min_survival, min_pairs, fit_start_fraction, beta_tolerance,
              max_lag_ps: float = np.inf):
    """(D_nm2_per_ps, fit indices or None, beta, reason or None) of one layer's MSD at `lags_ps` (module docstring)."""
    lags_ps = np.asarray(lags_ps, dtype=float)
    with np.errstate(invalid="ignore"):
        ok = (surv >= min_survival) & (n_pairs >= min_pairs) & (lags_ps > 0) & (lags_ps <= max_lag_ps)
    usable = np.flatnonzero(ok)
    ks = usable[lags_ps[usable] >= fit_start_fraction * lags_ps[usable[-1]]] if len(usable) else usable
    if len(ks) < 3:
        return np.nan, None, np.nan, (f"{len(ks)} lag(s) in the fit window have P >= {min_survival} and >= {min_pairs} "
                                      "surviving ion-origin pairs (need >= 3): ions leave the layer before they "
                                      "diffuse, too few ions are in it, or the trajectory is too short")
    beta = loglog_slope(lags_ps[ks], msd[ks])
    if not (np.isfinite(beta) and abs(beta - 1.0) <= beta_tolerance):
        return np.nan, ks, beta, (f"not diffusive: log-log slope {beta:.3g} over lags {lags_ps[ks[0]]:g}-"
                                  f"{lags_ps[ks[-1]]:g} ps is outside 1 +- {beta_tolerance}")
    return linear_fit(lags_ps[ks], msd[ks])[0] / 4.0, ks, beta, None


class LayerDiffusion(AnalysisBase):
    """D_xy of `ions` per layer from the survival-conditioned lateral MSD (module docstring).

    Results: ``layers`` {interface, centre: {D_nm2_per_ps, D_sem_nm2_per_ps, diffusive, no_window_reason,
    beta, fit_window_ps, survival_at_window_end, n_ions_mean}}, ``lagtimes_ps``, ``msd_nm2`` /
    ``survival`` / ``n_pairs`` {layer: array}, ``layer_nm``.
    """

    def __init__(self, ions, slab, layer_nm=1.0, min_survival=0.1, min_pairs=20, fit_start_fraction=0.2,
                 fit_end_fraction=0.5, beta_tolerance=0.2, **kwargs):
        super().__init__(ions.universe.trajectory, **kwargs)
        self.ions = check_atomgroup(ions, "layer-diffusion ions")
        self.slab = check_atomgroup(slab, "layer-diffusion slab")
        if not (layer_nm > 0 and 0 < min_survival <= 1 and min_pairs >= 1
                and 0 <= fit_start_fraction < fit_end_fraction <= 1 and beta_tolerance > 0):
            raise ConfigError("layer diffusion: need layer_nm > 0, 0 < min_survival <= 1, min_pairs >= 1, "
                              "0 <= fit_start_fraction < fit_end_fraction <= 1, beta_tolerance > 0")
        self.fit_end_fraction = float(fit_end_fraction)
        self.layer_nm, self.min_survival, self.min_pairs = float(layer_nm), float(min_survival), int(min_pairs)
        self.fit_start_fraction, self.beta_tolerance = float(fit_start_fraction), float(beta_tolerance)

    def _prepare(self):
        self._unwrap = Unwrapper()
        self._xy = np.zeros((self.n_frames, len(self.ions), 2))
        self._labels = np.full((self.n_frames, len(self.ions)), -1, dtype=np.int8)

    def _single_frame(self):
        height, _, slab_z = frame_geometry(self._ts, self.slab, "layer-diffusion trajectory")
        i = self._frame_index
        self._xy[i] = angstrom_to_nm(self._unwrap.step(self.ions.positions, self._ts.dimensions)[:, :2])
        d = face_distances(self.ions, slab_z, height)
        self._labels[i] = np.where(d < 0, -1, np.where(d < self.layer_nm, 0, 1))

    def _conclude(self):
        r = self.results
        dt = frame_spacing_ps(self.times, "layer-diffusion trajectory")
        r.layer_nm, r.layers, r.msd_nm2, r.survival, r.n_pairs = self.layer_nm, {}, {}, {}, {}
        max_lag = int(self.fit_end_fraction * (self.n_frames - 1))
        lag_idx = lag_grid(self.n_frames, max_lag)
        r.lagtimes_ps = lags = lag_idx * dt
        r.max_step_fraction = self._unwrap.max_step_fraction
        group_of = np.arange(len(self.ions)) % N_BLOCKS
        for code, name in enumerate(LAYERS):
            sq, cnt, base = layer_sums(self._xy, self._labels, code, lag_idx)
            n = cnt.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                msd, surv = sq.sum(axis=1) / n, n / base
            r.msd_nm2[name], r.survival[name], r.n_pairs[name] = msd, surv, n
            D, ks, beta, reason = fit_layer(lags, msd, n, surv, self.min_survival, self.min_pairs,
                                            self.fit_start_fraction, self.beta_tolerance)
            sem = np.nan
            if reason is None:  # the same window fitted per group of ions
                per_group = []
                for g in range(N_BLOCKS):
                    n_g = cnt[ks][:, group_of == g].sum(axis=1)
                    if np.all(n_g > 0):
                        per_group.append(linear_fit(lags[ks], sq[ks][:, group_of == g].sum(axis=1) / n_g)[0] / 4.0)
                sem = float(np.std(per_group, ddof=1) / np.sqrt(len(per_group))) if len(per_group) >= 2 else np.nan
            r.layers[name] = {
                "D_nm2_per_ps": D, "D_sem_nm2_per_ps": sem, "diffusive": reason is None, "no_window_reason": reason,
                "beta": beta, "fit_window_ps": None if ks is None else [float(lags[ks[0]]), float(lags[ks[-1]])],
                "survival_at_window_end": None if ks is None else float(surv[ks[-1]]),
                "n_ions_mean": float(np.mean(np.sum(self._labels == code, axis=1))),
            }
