"""Ion pairing (free Na+, contact ion pairs, aggregates) and Na-O(TFSI) residence times.

A cation i and an anion oxygen j are bound in frame t, h_ij(t) = 1, when |r_i - r_j| < r_c (minimum
image), r_c = the first-shell radius of the Na-O(TFSI) g(r) (analysis.rdf.first_shell). Per frame each
cation is classified by the number of DISTINCT anions (residues) it has a bound oxygen of:

    0 -> free (solvent-separated / no anion in the first shell)
    1 -> contact ion pair (CIP)
    >= 2 -> aggregate (AGG)

and fractions are averaged over frames.

Residence correlation functions over all (i, j) pairs that are ever bound, averaged over origins:

    intermittent: C_I(k) = sum_t sum_ij h_ij(t) h_ij(t+k) / sum_t sum_ij h_ij(t)
    continuous:   C_C(k) = sum_t sum_ij H_ij(t, t+k) / sum_t sum_ij h_ij(t)

with H_ij(t, t+k) = 1 only if the pair stays bound in every frame from t to t+k (no tolerance for
brief excursions), sums over origins t <= T-1-k. Residence time tau = integral of C from 0 to the
longest lag (trapezoid); if C has not decayed below 1/e by then, tau is a lower bound (flagged).
Memory grows with the bound pairs summed over frames (one integer per bound pair per frame), not with
all pairs, nor with frames x pairs ever bound (the correlations are computed a block of pairs at a time).
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase
from MDAnalysis.lib.distances import capped_distance

from spemd.errors import ConfigError
from spemd.units import nm_to_angstrom

from spemd.analysis._common import check_atomgroup, frame_spacing_ps, require_box

#: entries (frames x pair columns) of one block of the bound matrix in residence_correlations (4 M: ~130 MB
#: with its FFT)
_BLOCK_CELLS = 1 << 22


class IonPairing(AnalysisBase):
    """Free / CIP / AGG fractions of `cations` w.r.t. the anion atoms `anion_atoms` and residence times.

    Parameters
    ----------
    cations : AtomGroup (Na)
    anion_atoms : AtomGroup (O of TFSI); anions are told apart by residue
    cutoff_nm : float, first-shell radius r_c
    residence : bool, also compute the residence correlation functions

    Results: ``free_fraction``, ``cip_fraction``, ``agg_fraction`` (+ ``*_sem`` over frames, standard
    error of block means, 5 blocks), ``anion_count_histogram`` (fraction of cations with k anions),
    ``mean_bound_oxygens``, and with residence: ``lagtimes_ps``, ``c_continuous``,
    ``c_intermittent``, ``tau_continuous_ps``, ``tau_intermittent_ps``, ``tau_*_lower_bound``.
    """

    def __init__(self, cations, anion_atoms, cutoff_nm, residence=True, **kwargs):
        super().__init__(cations.universe.trajectory, **kwargs)
        self.cations = check_atomgroup(cations, "pairing cations")
        self.anion_atoms = check_atomgroup(anion_atoms, "pairing anion atoms")
        if not (cutoff_nm is not None and np.isfinite(cutoff_nm) and cutoff_nm > 0):
            raise ConfigError(f"cutoff_nm: {cutoff_nm!r} must be a positive distance (nm)")
        self.cutoff_nm = float(cutoff_nm)
        self.residence = residence

    def _prepare(self):
        self._cut_A = float(nm_to_angstrom(self.cutoff_nm))
        self._res = self.anion_atoms.resindices
        self._nc = len(self.cations)
        self._no = len(self.anion_atoms)
        self._class = np.zeros((self.n_frames, 3))
        self._hist = np.zeros(8)
        self._bound_o = np.zeros(self.n_frames)
        self._pairs = []

    def _single_frame(self):
        dims = require_box(self._ts, "pairing trajectory")
        pairs = capped_distance(self.cations.positions, self.anion_atoms.positions, self._cut_A, box=dims,
                                return_distances=False)
        i = self._frame_index
        self._bound_o[i] = len(pairs) / self._nc
        if len(pairs):
            # distinct (cation, anion residue) combinations
            keys = np.unique(pairs[:, 0].astype(np.int64) * (self._res.max() + 1) + self._res[pairs[:, 1]])
            n_anions = np.bincount(keys // (self._res.max() + 1), minlength=self._nc)
        else:
            n_anions = np.zeros(self._nc, dtype=np.int64)
        self._class[i] = [np.mean(n_anions == 0), np.mean(n_anions == 1), np.mean(n_anions >= 2)]
        self._hist += np.bincount(np.minimum(n_anions, 7), minlength=8) / self._nc
        if self.residence:
            self._pairs.append(np.sort(pairs[:, 0].astype(np.int64) * self._no + pairs[:, 1]))

    def _conclude(self):
        r = self.results
        F = self.n_frames
        means = self._class.mean(axis=0)
        nb = min(5, F)
        if nb >= 2:
            blocks = np.array([b.mean(axis=0) for b in np.array_split(self._class, nb)])
            sems = blocks.std(axis=0, ddof=1) / np.sqrt(nb)
        else:
            sems = np.full(3, np.nan)
        r.free_fraction, r.cip_fraction, r.agg_fraction = (float(x) for x in means)
        r.free_fraction_sem, r.cip_fraction_sem, r.agg_fraction_sem = (float(x) for x in sems)
        r.anion_count_histogram = self._hist / F
        r.mean_bound_oxygens = float(self._bound_o.mean())
        r.cutoff_nm = self.cutoff_nm
        r.classification = "cation by number of distinct anions with an O within cutoff: 0 free, 1 CIP, >=2 AGG"
        if self.residence and F >= 2:
            dt = frame_spacing_ps(self.times, "pairing trajectory")
            cc, ci = residence_correlations(self._pairs)
            lags = np.arange(F) * dt
            r.lagtimes_ps = lags
            r.c_continuous, r.c_intermittent = cc, ci
            for name, c in (("continuous", cc), ("intermittent", ci)):
                tau, lower = residence_time(lags, c)
                r[f"tau_{name}_ps"] = tau
                r[f"tau_{name}_lower_bound"] = lower
            r.residence_definition = ("Na-O(anion) within cutoff; continuous (no excursions allowed) and "
                                      "intermittent correlation; tau = integral of C(t) to the longest lag")


def residence_correlations(frames_pairs):
    """Continuous and intermittent correlation (module docstring) from per-frame sorted pair ids.

    The bound matrix h (frames x pairs ever bound) is built a block of pairs at a time, at most
    _BLOCK_CELLS entries, so memory does not grow with frames x pairs: a long trajectory of diffusing
    ions binds ever more distinct pairs."""
    from scipy.fft import irfft, next_fast_len, rfft

    F = len(frames_pairs)
    ids = np.concatenate([np.asarray(p, dtype=np.int64) for p in frames_pairs]) if F else np.array([], np.int64)
    if ids.size == 0:
        return np.full(F, np.nan), np.full(F, np.nan)
    frames = np.repeat(np.arange(F), [len(p) for p in frames_pairs])
    all_ids, column = np.unique(ids, return_inverse=True)
    key = np.unique(column * F + frames)  # (pair column, frame) once each, by column then frame
    per_frame = np.bincount(key % F, minlength=F).astype(float)
    # denominator for lag k: bound pairs at origins t <= F-1-k
    denom = np.cumsum(per_frame)[::-1]  # denom[k] = sum_{t=0}^{F-1-k}
    n = next_fast_len(2 * F, real=True)
    num_i = np.zeros(F)
    run_hist = np.zeros(F + 1, dtype=np.int64)
    width = max(1, _BLOCK_CELLS // F)
    for c0 in range(0, len(all_ids), width):
        lo, hi = np.searchsorted(key, [c0 * F, (c0 + width) * F])
        cols = min(width, len(all_ids) - c0)
        h = np.zeros((F, cols), dtype=bool)
        h[key[lo:hi] % F, key[lo:hi] // F - c0] = True
        # intermittent: autocorrelation per pair column, summed
        f = rfft(h.astype(np.float64), n=n, axis=0)
        num_i += irfft(f * np.conj(f), n=n, axis=0)[:F].sum(axis=1)
        # continuous: runs of consecutive bound frames of length L contribute max(L - k, 0) at lag k
        padded = np.zeros((F + 2, cols), dtype=np.int8)
        padded[1:-1] = h
        d = np.diff(padded, axis=0)
        starts = np.nonzero(d.T == 1)
        ends = np.nonzero(d.T == -1)
        run_hist += np.bincount(ends[1] - starts[1], minlength=F + 1)[: F + 1]  # both sorted by column then row
    num_i = np.rint(num_i)
    L = np.arange(F + 1)
    # num_c[k] = sum_L n(L) (L - k)_+ = S1(k) - k S0(k), S0/S1 tail sums of n(L) and L n(L) over L > k
    s0 = np.cumsum(run_hist[::-1])[::-1]
    s1 = np.cumsum((L * run_hist)[::-1])[::-1]
    k = np.arange(F)
    num_c = s1[k + 1] - k * s0[k + 1] if F + 1 > 1 else np.zeros(F)
    with np.errstate(divide="ignore", invalid="ignore"):
        return num_c / denom, num_i / denom


def residence_time(lags_ps, c):
    """(tau, lower_bound_flag): trapezoid integral of C over all lags; lower bound if C(end) > 1/e."""
    c = np.asarray(c, dtype=float)
    ok = np.isfinite(c)
    if ok.sum() < 2:
        return float("nan"), True
    lags = np.asarray(lags_ps, dtype=float)[ok]
    c = c[ok]
    tau = float(np.sum(0.5 * (c[1:] + c[:-1]) * np.diff(lags)))
    return tau, bool(c[-1] > np.exp(-1))
