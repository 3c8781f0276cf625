"""Radial distribution function g(r) and running coordination number n(r) between two selections.

Definitions (A = first group, B = second group, ordered pairs (a, b) counted once per frame):

    g(r)  = 1/F * sum_f  V_f * c_f(r) / (N_pairs * 4/3 pi (r_hi^3 - r_lo^3))
    n(r)  = 1/(F * N_A) * sum_f sum_{r' <= r} c_f(r')

c_f(r) is the number of A-B pairs in the bin around r in frame f, F the number of frames, V_f the
volume of frame f (NPT-aware: each frame is normalised by its own volume; with
``accessible_volume_nm3`` the given constant volume is used instead) and N_pairs = N_A * N_B minus the
excluded pairs (identical atoms always; pairs inside the same residue with ``exclude_same="residue"``).
n(r) is a direct count and does not depend on the normalisation. ``results.normalisation`` states it.

Slab boxes (``normalisation="lateral"``): the electrolyte is a film with pores, so no single volume
makes the ideal-gas reference right. Instead every B atom is kept at its own height z_b and spread
uniformly over the periodic x/y cross-section A_xy; the expected count of an A-B pair with height
difference dz (minimum image, |dz| <= L_z / 2) in the bin [r_lo, r_hi) is

    (pi / A_xy) * max(0, r_hi^2 - max(r_lo, |dz|)^2)

(the part of the spherical shell at height dz is a ring of area 2 pi r dr), and

    g(r) = sum_f c_f(r) / sum_f sum_(a,b) (pi / A_xy) max(0, r_hi^2 - max(r_lo, |dz_ab|)^2)

over the same non-excluded pairs. For a fluid uniform in x/y at any density profile in z (a film, a
film with a depleted layer, a box without slab) the tail of g is 1; in a plain box the reference equals
the volume one. It needs an orthorhombic box whose z axis is the slab normal.

Preconditions: a periodic box in every frame; r_max not above half the shortest box width (minimum
image). Memory is independent of the number of frames: one histogram is accumulated per frame from
the pairs within r_max (periodic KD-tree, ``scipy.spatial.cKDTree(boxsize=...)``, for orthorhombic
boxes; ``MDAnalysis.lib.distances.capped_distance`` for triclinic ones or ``kernel="capped"``).
Bins are half-open [r_lo, r_hi).

First shell: the first significant peak of g(r) (lightly smoothed; Poisson-significant excess over
the ideal-gas count) and the minimum of the first basin after it (g smoothed over 0.2 A, between the
first and second significant peaks, or after g falls below half the peak height and before it
recovers; a noise dip on the peak's shoulder is not a minimum); the first-shell coordination number
is n(r) at that minimum. A radius given per pair in the config (analysis.shell_radius_nm) overrides it.
"""

from __future__ import annotations

import warnings

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase
from MDAnalysis.lib.distances import capped_distance

from spemd.errors import ConfigError, InputError, one_of
from spemd.units import angstrom_to_nm, nm_to_angstrom

from spemd.analysis._common import box_volume_nm3, check_atomgroup, half_min_width_nm, require_box
EXCLUDE_CHOICES = (None, "residue")
KERNELS = ("kdtree", "capped")
NORMALISATIONS = ("volume", "lateral")
_DZ_BINS = 4000  # |dz| histogram on [0, r_max) for the lateral reference: bin error < 1e-6 of a shell


class RDF(AnalysisBase):
    """g(r) and n(r) between `group_a` and `group_b`.

    Parameters
    ----------
    group_a, group_b : AtomGroup
    r_max_nm : float, largest distance (nm)
    bins : int, number of bins on [r_min_nm, r_max_nm]
    r_min_nm : float, smallest distance (nm), default 0
    exclude_same : None or "residue": drop pairs inside one residue (same molecule)
    accessible_volume_nm3 : float or None: normalise g(r) by this volume instead of the box volume
    normalisation : "volume" (default: per-frame box volume, or ``accessible_volume_nm3``) or "lateral"
        (slab boxes: ideal gas at each B atom's height, module docstring)
    kernel : "kdtree" (default: periodic scipy cKDTree pair search, orthorhombic boxes; triclinic
        frames fall back to capped_distance) or "capped" (MDAnalysis capped_distance always)

    Results (``.results``): ``bins_nm`` (bin centres), ``edges_nm``, ``rdf``, ``cn`` (running
    coordination number at the bin's upper edge), ``count`` (total pair counts per bin), ``n_pairs``,
    ``normalisation``, ``mean_volume_nm3``, ``peaks_nm``, ``first_peak_nm``,
    ``first_shell_radius_nm``, ``first_shell_cn``.
    """

    def __init__(self, group_a, group_b, r_max_nm=1.0, bins=200, r_min_nm=0.0, exclude_same=None,
                 accessible_volume_nm3=None, kernel="kdtree", normalisation="volume", **kwargs):
        super().__init__(group_a.universe.trajectory, **kwargs)
        self.group_a = check_atomgroup(group_a, "RDF group_a")
        self.group_b = check_atomgroup(group_b, "RDF group_b")
        if exclude_same not in EXCLUDE_CHOICES:
            raise ConfigError(one_of("exclude_same", exclude_same, EXCLUDE_CHOICES))
        if not (r_max_nm > r_min_nm >= 0):
            raise ConfigError(f"r_max_nm: {r_max_nm!r} must be larger than r_min_nm ({r_min_nm!r}) >= 0")
        if int(bins) < 1:
            raise ConfigError(f"bins: {bins!r} must be a positive integer")
        if accessible_volume_nm3 is not None and not accessible_volume_nm3 > 0:
            raise ConfigError(f"accessible_volume_nm3: {accessible_volume_nm3!r} must be > 0 nm^3 or None")
        self.r_min_nm = float(r_min_nm)
        self.r_max_nm = float(r_max_nm)
        self.nbins = int(bins)
        self.exclude_same = exclude_same
        self.accessible_volume_nm3 = accessible_volume_nm3
        if normalisation not in NORMALISATIONS:
            raise ConfigError(one_of("normalisation", normalisation, NORMALISATIONS))
        if normalisation == "lateral" and accessible_volume_nm3 is not None:
            raise ConfigError("normalisation 'lateral' and accessible_volume_nm3: the lateral reference uses no volume; "
                              "give one of them")
        self.normalisation = normalisation
        if kernel not in KERNELS:
            raise ConfigError(one_of("kernel", kernel, KERNELS))
        self.kernel = kernel

    def _prepare(self):
        self._rmin_A = float(nm_to_angstrom(self.r_min_nm))
        self._rmax_A = float(nm_to_angstrom(self.r_max_nm))
        self._inv_dr_A = self.nbins / (self._rmax_A - self._rmin_A)
        self._count = np.zeros(self.nbins, dtype=np.int64)
        self._edges_nm = np.linspace(self.r_min_nm, self.r_max_nm, self.nbins + 1)
        self._shell_nm3 = 4.0 / 3.0 * np.pi * np.diff(self._edges_nm**3)
        self._weighted = np.zeros(self.nbins, dtype=np.float64)  # sum_f V_f c_f(r) / shell(r)
        self._expected = np.zeros(self.nbins, dtype=np.float64)  # ideal-gas count: sum_f N_pairs shell(r) / V_f
        self._n_volume_sum = 0.0
        self._volume_sum = 0.0
        self._warned_range = False
        ia, ib = self.group_a.indices, self.group_b.indices
        self._check_identity = np.intersect1d(ia, ib).size > 0
        self._ia, self._ib = ia, ib
        if self.exclude_same == "residue":
            self._ra, self._rb = self.group_a.resindices, self.group_b.resindices
        # number of excluded ordered pairs
        excluded = 0
        if self.exclude_same == "residue":
            ua, ca = np.unique(self._ra, return_counts=True)
            ub, cb = np.unique(self._rb, return_counts=True)
            _, pa, pb = np.intersect1d(ua, ub, return_indices=True)
            excluded = int(np.sum(ca[pa] * cb[pb]))
        elif self._check_identity:
            excluded = int(np.intersect1d(ia, ib).size)
        self._n_pairs = len(ia) * len(ib) - excluded
        if self._n_pairs <= 0:
            raise InputError("RDF groups: no pairs left after exclusions; check the selections and exclude_same")
        if self.normalisation == "lateral":
            if self.exclude_same == "residue":
                self._keep = self._ra[:, None] != self._rb[None, :]
            elif self._check_identity:
                self._keep = ia[:, None] != ib[None, :]
            else:
                self._keep = None
            # ring integral per |dz| bin (centre) and r bin: (pi) max(0, r_hi^2 - max(r_lo, dz)^2), / A_xy per frame
            dz = (np.arange(_DZ_BINS) + 0.5) * self.r_max_nm / _DZ_BINS
            lo, hi = self._edges_nm[:-1], self._edges_nm[1:]
            self._ring = np.pi * np.clip(hi[None, :] ** 2 - np.maximum(lo[None, :], dz[:, None]) ** 2, 0.0, None)

    def _single_frame(self):
        dims = require_box(self._ts, "RDF trajectory")
        if not self._warned_range and self.r_max_nm > half_min_width_nm(dims) * (1 + 1e-9):
            warnings.warn(
                f"RDF r_max_nm={self.r_max_nm} exceeds half the box width ({half_min_width_nm(dims):.4g} nm) "
                f"in frame {self._ts.frame}; distances beyond it are not minimum-image complete",
                RuntimeWarning, stacklevel=2)
            self._warned_range = True
        pairs, dist = self._pairs_within(self.group_a.positions, self.group_b.positions, dims)
        if len(dist):
            if self.exclude_same == "residue":
                keep = self._ra[pairs[:, 0]] != self._rb[pairs[:, 1]]
                dist = dist[keep]
            elif self._check_identity:
                keep = self._ia[pairs[:, 0]] != self._ib[pairs[:, 1]]
                dist = dist[keep]
            idx = ((dist - self._rmin_A) * self._inv_dr_A).astype(np.int64)
            idx = idx[(idx >= 0) & (idx < self.nbins) & (dist >= self._rmin_A)]
            c = np.bincount(idx, minlength=self.nbins)
        else:
            c = np.zeros(self.nbins, dtype=np.int64)
        self._count += c
        self._volume_sum += box_volume_nm3(dims)
        if self.normalisation == "lateral":
            self._expected += self._lateral_reference(dims)
            return
        vol = self.accessible_volume_nm3 if self.accessible_volume_nm3 is not None else box_volume_nm3(dims)
        self._weighted += vol * c / self._shell_nm3
        self._expected += self._n_pairs * self._shell_nm3 / vol
        self._n_volume_sum += vol

    def _lateral_reference(self, dims):
        """Ideal-gas pair count per bin of this frame with every B atom at its own height (module docstring)."""
        if not np.allclose(dims[3:], 90.0):
            raise InputError(f"RDF normalisation 'lateral': frame {self._ts.frame} has a triclinic box "
                             f"{np.asarray(dims[3:]).tolist()}; it needs an orthorhombic slab box")
        L = angstrom_to_nm(np.asarray(dims[:3], dtype=np.float64))
        za = angstrom_to_nm(self.group_a.positions[:, 2].astype(np.float64))
        zb = angstrom_to_nm(self.group_b.positions[:, 2].astype(np.float64))
        dz = za[:, None] - zb[None, :]
        dz = np.abs(dz - L[2] * np.round(dz / L[2]))
        if self._keep is not None:
            dz = dz[self._keep]
        k = (dz * (_DZ_BINS / self.r_max_nm)).astype(np.int64)
        hist = np.bincount(k[k < _DZ_BINS], minlength=_DZ_BINS)
        return hist @ self._ring / (L[0] * L[1])

    def _pairs_within(self, pa, pb, dims):
        """(pairs (n, 2) as (index in A, index in B), distances in A) of all pairs closer than r_max."""
        orthorhombic = np.allclose(dims[3:], 90.0)
        if self.kernel == "capped" or not orthorhombic:
            return capped_distance(pa, pb, self._rmax_A, box=dims, return_distances=True)
        from scipy.spatial import cKDTree

        L = np.asarray(dims[:3], dtype=np.float64)
        a = np.mod(np.asarray(pa, dtype=np.float64), L)
        b = np.mod(np.asarray(pb, dtype=np.float64), L)
        a[a >= L] = 0.0  # np.mod can round up to L
        b[b >= L] = 0.0
        m = cKDTree(a, boxsize=L).sparse_distance_matrix(cKDTree(b, boxsize=L), self._rmax_A,
                                                         output_type="ndarray")
        return np.column_stack([m["i"], m["j"]]), m["v"]

    def _conclude(self):
        F = self.n_frames
        if F == 0:
            raise InputError("RDF trajectory: no frames analysed")
        edges = self._edges_nm
        r = self.results
        r.edges_nm = edges
        r.bins_nm = 0.5 * (edges[1:] + edges[:-1])
        r.count = self._count.copy()
        r.n_pairs = self._n_pairs
        r.n_frames = F
        r.cn = np.cumsum(self._count) / (F * len(self.group_a))
        r.mean_volume_nm3 = self._volume_sum / F
        if self.normalisation == "lateral":
            with np.errstate(invalid="ignore", divide="ignore"):
                r.rdf = np.where(self._expected > 0, self._count / self._expected, 0.0)
            r.normalisation = "lateral: ideal gas uniform in x/y at each B atom's height (slab box, per frame)"
            r.normalisation_volume_nm3 = None
        else:
            r.rdf = self._weighted / (F * self._n_pairs)
            r.normalisation = ("box volume (per frame)" if self.accessible_volume_nm3 is None
                               else f"accessible volume {self.accessible_volume_nm3:g} nm^3")
            r.normalisation_volume_nm3 = self._n_volume_sum / F
        # expected ideal-gas count per bin over the run (same volumes and shells as g), for peak significance
        shells = first_shell(r.bins_nm, r.rdf, r.cn, self._count, self._expected)
        r.update(shells)


def _smooth(y, width=3):
    if width <= 1 or len(y) < width:
        return np.asarray(y, dtype=float)
    kernel = np.ones(width) / width
    pad = width // 2
    return np.convolve(np.pad(y, pad, mode="edge"), kernel, mode="valid")


def _find_peaks(y, min_height, min_prominence):
    """Indices of local maxima (first bin of a plateau) with height and topographic prominence limits."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    out = []
    for i in range(n):
        left = y[i - 1] if i > 0 else -np.inf
        j = i
        while j + 1 < n and y[j + 1] == y[i]:
            j += 1
        right = y[j + 1] if j + 1 < n else -np.inf
        if not (y[i] > left and y[i] > right and y[i] >= min_height):
            continue
        # prominence: height above the higher of the two minima reached before a higher point
        lo = i
        while lo > 0 and y[lo - 1] <= y[i]:
            lo -= 1
        hi = j
        while hi + 1 < n and y[hi + 1] <= y[i]:
            hi += 1
        base = max(np.min(y[lo:i + 1]), np.min(y[j:hi + 1]))
        if y[i] - base >= min_prominence:
            out.append(i)
    return [k for k in out if k == 0 or y[k - 1] != y[k]]


def first_shell(r_nm, g, cn, count=None, expected=None, n_sigma=4.0, min_height=1.1, min_count=10,
                min_depth=0.5, smooth_width_nm=0.02):
    """Peaks of g(r), first-shell radius (minimum of the first basin after the first peak) and CN there.

    A peak must be a local maximum of lightly smoothed g (running mean over `smooth_width_nm`, >= 3 bins) with g >= `min_height`,
    a prominence of at least 5 % of the highest g and, when counts are given, at least `min_count`
    pairs and an excess over the ideal-gas count of at least `n_sigma` Poisson standard deviations
    (both summed over the smoothing window). The radius is the minimum of the smoothed g between the first and the second significant peak; with no second peak, the
    minimum after g falls below `min_depth` x the first peak height and before it recovers (as
    solvation-shell tools do). Returns a dict; NaN where no significant peak or no such fall exists.
    """
    r_nm = np.asarray(r_nm, dtype=float)
    dr = float(np.median(np.diff(r_nm))) if len(r_nm) > 1 else 1.0
    smooth_bins = max(3, 2 * int(round(0.5 * smooth_width_nm / dr)) + 1)
    r_nm = np.asarray(r_nm, dtype=float)
    gs = _smooth(np.asarray(g, dtype=float), smooth_bins)
    h = smooth_bins // 2
    if not np.any(np.isfinite(gs)) or np.nanmax(gs) <= 0:
        cand = np.array([], dtype=int)
    else:
        cand = _find_peaks(gs, min_height, 0.05 * np.nanmax(gs))
    peaks = []
    for p in cand:
        if count is not None and expected is not None:
            lo, hi = max(p - h, 0), min(p + h + 1, len(gs))
            obs, exp = float(np.sum(count[lo:hi])), float(np.sum(expected[lo:hi]))
            if obs < min_count or obs - exp < n_sigma * np.sqrt(max(exp, 1.0)):
                continue
        # refine to the raw maximum near the smoothed peak
        lo, hi = max(p - h - 1, 0), min(p + h + 2, len(g))
        k = lo + int(np.argmax(np.asarray(g)[lo:hi]))
        if k not in peaks:
            peaks.append(k)
    out = {"peaks_nm": r_nm[peaks] if peaks else np.array([]), "first_peak_nm": np.nan,
           "first_shell_radius_nm": np.nan, "first_shell_cn": np.nan, "first_minimum_found": False}
    if not peaks:
        return out
    p0 = peaks[0]
    out["first_peak_nm"] = float(r_nm[p0])
    # The minimum is that of the smoothed g over the whole first basin, not the first local dip (on a
    # small sample a noise dip just after the peak is a local minimum): the basin ends at the second
    # significant peak, or, without one, where g rises back above `min_depth` x the peak height after
    # first falling below it. No such fall: no first shell.
    ws = gs
    later = [q for q in peaks[1:] if q > p0 + 1]
    if later:
        k = p0 + int(np.argmin(ws[p0:later[0]]))
    else:
        below = np.nonzero(ws[p0:] < min_depth * ws[p0])[0]
        if not len(below):
            return out
        j = p0 + int(below[0])
        back = np.nonzero(ws[j:] >= min_depth * ws[p0])[0]
        end = j + int(back[0]) if len(back) else len(ws)
        k = j + int(np.argmin(ws[j:end]))
    out["first_shell_radius_nm"] = float(r_nm[k])
    out["first_shell_cn"] = float(np.asarray(cn)[k])
    out["first_minimum_found"] = True
    return out


def rdf_peaks_angstrom(results) -> list[float]:
    """Peak positions of an RDF result in Angstrom (for reports and plots)."""
    return [float(x) for x in nm_to_angstrom(np.asarray(results.peaks_nm, dtype=float))]


__all__ = ["RDF", "first_shell", "rdf_peaks_angstrom"]
