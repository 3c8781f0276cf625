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

Finite-size (canonical) correction (Ganguly & van der Vegt, J. Chem. Theory Comput. 2013, 9, 1347):
a box holds a fixed number of B atoms, so the n(r) of them an A atom holds within r are missing from
the rest of the box, and the raw tail tends to (N_B - n(r)) / (N_B - n_id(r)) instead of 1. With
strongly paired ions in a small box (6 Na+, 24 O(TFSI)) that is -5 to -10 % at 6-8 A. ``rdf_corrected``
uses the conditional ideal-gas count instead: every B atom that is not within r of the A atom is
spread by the reference over the region outside r only,

    g_corr(r) = sum_f c_f(r) / sum_f sum_a sum_(b: d_ab >= r) p_ab(r) / (1 - P_ab(r)),

p_ab(r) the reference probability of b in the bin around r of a and P_ab(r) that of b within r (both
at the bin centre; a pair in the bin counts half). With the volume reference p = shell / V and
P = V_r / V, and this is g(r) (N_B - n_id(r)) / (N_B - n(r)), eq. 9 of the paper. With the lateral
reference the same sum also drops the B atoms an A atom holds from the reference of its outer shells:
uncorrected, the lateral reference spreads them over the whole plane at their own height, which
lowers the raw tail of a slab box's paired ions further (a centre holding 3 of 40 B atoms in a 3 nm
box: 0.85 lateral, 0.925 volume; both 1 corrected). It needs r_min = 0 (every pair within r must be
known); otherwise ``rdf_corrected`` is NaN.

Uncertainty: the A atoms are the independent samples (in a polymer electrolyte an ion barely moves in
a short run, so frames are not); ``rdf_sem`` is the delete-one jackknife standard error over A atoms
of the ratio estimator count / ideal-gas count (and of the corrected g for ``rdf_corrected_sem``);
:meth:`RDF.window_mean` gives the mean of g over a range of r (e.g. the tail) with its jackknife error.
With one A atom the errors are NaN.

Preconditions: a periodic box in every frame; r_max not above half the shortest box width (minimum
image). Memory is independent of the number of frames: one histogram is accumulated per frame from
the pairs within r_max. Pair search (``kernel``): ``"auto"`` (default) loops over all N_A x N_B
minimum-image distances in compiled code (``"all_pairs"``, analysis/_kernels.py) up to ALL_PAIRS_MAX
pairs, and above that uses a periodic KD-tree (``scipy.spatial.cKDTree(boxsize=...)``, ``"kdtree"``);
``"capped"`` is ``MDAnalysis.lib.distances.capped_distance``, which triclinic boxes always use. Bins
are half-open [r_lo, r_hi).

First shell (:func:`first_shell`): the first significant peak of g(r) (lightly smoothed; Poisson-
significant excess over the ideal-gas count), then the first minimum after it that the errors support:
the running minimum of the smoothed g (finite-size corrected where it exists, whose tail is 1) until g
rises again by more than 2.5 jackknife errors, lying 2.5 errors below the peak, and inside the pair's
physical bounds where given (``shell_bounds_nm``; analysis.production gives Na-O(TFSI) 2.8-4.0 A and
Na-O(ether) 2.8-4.5 A). Where none is found the radius and CN are NaN and ``first_shell_reason`` says
why; nothing downstream may then use a radius. The first-shell coordination number is n(r) at the
minimum, with its standard error over the A atoms. A radius given per pair in the config
(analysis.shell_radius_nm) overrides it.
"""

from __future__ import annotations

import warnings

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase
from MDAnalysis.lib.distances import capped_distance

from spemd.errors import ConfigError, InputError, one_of
from spemd.units import angstrom_to_nm, nm_to_angstrom

from spemd.analysis._common import box_volume_nm3, check_atomgroup, check_finite, half_min_width_nm, require_box
EXCLUDE_CHOICES = (None, "residue")
KERNELS = ("auto", "all_pairs", "kdtree", "capped")
#: largest N_A x N_B for which kernel "auto" loops over all pairs (beyond, a KD-tree visits fewer)
ALL_PAIRS_MAX = 4_000_000
NORMALISATIONS = ("volume", "lateral")
_DZ_BINS = 4000  # |dz| histogram on [0, r_max) for the lateral reference: bin error < 1e-6 of a shell
_A_CHUNK = 256  # A atoms per block of the lateral reference's |dz| window (memory: _A_CHUNK x N_B pairs)
_DZ_PENDING = 2_000_000  # (A atom, |dz| bin) codes gathered before they are binned (16 MB)
#: where a pair's first-shell minimum can physically lie (nm); outside them :func:`first_shell` reports none
SHELL_BOUNDS_NM = {"Na-O_TFSI": (0.28, 0.40), "Na-O_ether": (0.28, 0.45)}


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
    kernel : "auto" (default: "all_pairs" up to ALL_PAIRS_MAX pairs, else "kdtree"), "all_pairs" (every
        minimum-image distance, compiled loop of analysis/_kernels.py), "kdtree" (periodic scipy cKDTree)
        or "capped" (MDAnalysis capped_distance); triclinic frames always use capped_distance
    shell_bounds_nm : (lo, hi) or None: where the pair's first-shell minimum can physically lie
        (:func:`first_shell`)

    Results (``.results``): ``bins_nm`` (bin centres), ``edges_nm``, ``rdf``, ``cn`` (running
    coordination number at the bin's upper edge), ``count`` (total pair counts per bin), ``n_pairs``,
    ``normalisation``, ``mean_volume_nm3``, ``peaks_nm``, ``first_peak_nm``,
    ``first_shell_radius_nm``, ``first_shell_cn``, ``first_shell_cn_sem``, ``first_shell_reason`` (why
    there is none; None when found), ``first_shell_bounds_nm``, ``rdf_sem``, ``rdf_corrected`` (finite-size
    corrected), ``rdf_corrected_sem``, ``cn_sem`` (standard error of n(r) over the A atoms),
    ``n_b_per_a`` (mean non-excluded B atoms per A atom).
    """

    def __init__(self, group_a, group_b, r_max_nm=1.0, bins=200, r_min_nm=0.0, exclude_same=None,
                 accessible_volume_nm3=None, kernel="auto", normalisation="volume", shell_bounds_nm=None, **kwargs):
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
        if shell_bounds_nm is not None and not (len(shell_bounds_nm) == 2 and 0 <= shell_bounds_nm[0] < shell_bounds_nm[1]):
            raise ConfigError(f"shell_bounds_nm: {shell_bounds_nm!r} must be (lo, hi) in nm with 0 <= lo < hi, or None")
        self.shell_bounds_nm = shell_bounds_nm
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
        self._edges_nm = np.linspace(self.r_min_nm, self.r_max_nm, self.nbins + 1)
        self._shell_nm3 = 4.0 / 3.0 * np.pi * np.diff(self._edges_nm**3)
        self._weighted = np.zeros(self.nbins, dtype=np.float64)  # sum_f V_f c_f(r) / shell(r)
        self._expected = np.zeros(self.nbins, dtype=np.float64)  # ideal-gas count: sum_f N_pairs shell(r) / V_f
        self._n_volume_sum = 0.0
        self._inv_volume_sum = 0.0  # sum_f 1 / V_f
        # frames of one normalisation volume (all of them with a fixed volume or an NVT box) are summed
        # as counts and turned into the volume reference once (_flush_volume)
        self._group_volume, self._group_frames, self._group_start = None, 0, None
        self._volume_sum = 0.0
        self._warned_range = False
        self._pair_buf = None  # output arrays of the all-pairs kernel, reused frame to frame
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
        # non-excluded B atoms of each A atom, and per-A histograms for the finite-size correction and jackknife
        if self.exclude_same == "residue":
            same = np.searchsorted(ub, self._ra)
            same = np.where((same < len(ub)) & (ub[np.minimum(same, len(ub) - 1)] == self._ra),
                            cb[np.minimum(same, len(ub) - 1)], 0)
        elif self._check_identity:
            same = np.isin(ia, ib).astype(np.int64)
        else:
            same = np.zeros(len(ia), dtype=np.int64)
        self._n_b_of_a = (len(ib) - same).astype(np.float64)
        self._count_a = np.zeros((len(ia), self.nbins), dtype=np.int64)
        self._expected_a = np.zeros((len(ia), self.nbins), dtype=np.float64)
        self._expected_cond_a = np.zeros((len(ia), self.nbins), dtype=np.float64)  # finite-size corrected
        mid = 0.5 * (self._edges_nm[1:] + self._edges_nm[:-1])
        self._v_mid_nm3 = 4.0 / 3.0 * np.pi * mid**3
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
            # |dz| histograms per A atom summed over the frames of one x/y area (_flush_lateral)
            self._dz_hist = np.zeros((len(ia), _DZ_BINS), dtype=np.int64)
            self._dz_area = self._weights_area = None
            self._dz_codes, self._dz_pending = [], 0

    def _single_frame(self):
        pa, pb = self.group_a.positions, self.group_b.positions
        if not (np.isfinite(pa).all() and np.isfinite(pb).all()):
            check_finite(self._ts, (self.group_a, self.group_b), "RDF trajectory")  # raises, naming the atom
        dims = require_box(self._ts, "RDF trajectory")
        if not self._warned_range and self.r_max_nm > half_min_width_nm(dims) * (1 + 1e-9):
            warnings.warn(
                f"RDF r_max_nm={self.r_max_nm} exceeds half the box width ({half_min_width_nm(dims):.4g} nm) "
                f"in frame {self._ts.frame}; distances beyond it are not minimum-image complete",
                RuntimeWarning, stacklevel=2)
            self._warned_range = True
        pairs, dist = self._pairs_within(pa, pb, dims)
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        owner, pairs_b = pairs[:, 0], pairs[:, 1]  # index in A, index in B
        if self.exclude_same == "residue":
            keep = self._ra[owner] != self._rb[pairs_b]
            dist, owner, pairs_b = dist[keep], owner[keep], pairs_b[keep]
        elif self._check_identity:
            keep = self._ia[owner] != self._ib[pairs_b]
            dist, owner, pairs_b = dist[keep], owner[keep], pairs_b[keep]
        idx = ((dist - self._rmin_A) * self._inv_dr_A).astype(np.int64)
        inside = (idx >= 0) & (idx < self.nbins) & (dist >= self._rmin_A)
        idx, owner, pairs_b = idx[inside], owner[inside], pairs_b[inside]
        c_a = np.bincount(owner * self.nbins + idx, minlength=self._count_a.size).reshape(self._count_a.shape)
        box_volume = box_volume_nm3(dims)
        self._volume_sum += box_volume
        if self.normalisation == "lateral":
            self._count_a += c_a
            self._lateral_reference(dims, owner, pairs_b, idx)
            return
        vol = self.accessible_volume_nm3 if self.accessible_volume_nm3 is not None else box_volume
        if vol != self._group_volume:
            self._flush_volume()
            self._group_volume, self._group_start = vol, self._count_a.copy()
        self._count_a += c_a
        self._group_frames += 1
        self._inv_volume_sum += 1.0 / vol
        self._n_volume_sum += vol

    def _flush_volume(self):
        """Add the volume reference of the frames gathered at one volume V (counts C = sum_f c_f):
        sum_f V c_f / shell to the weighted counts, and the conditional reference of the B atoms not
        within r, sum_f (N_B - n_f(r)) shell / (V - V_r), n_f(r) at the bin centres, per A atom."""
        if self._group_volume is None:
            return
        vol, frames = self._group_volume, self._group_frames
        C = self._count_a - self._group_start
        self._weighted += vol * C.sum(axis=0) / self._shell_nm3
        n_mid = np.cumsum(C, axis=1) - 0.5 * C
        with np.errstate(invalid="ignore", divide="ignore"):
            self._expected_cond_a += ((frames * self._n_b_of_a[:, None] - n_mid) * self._shell_nm3[None, :]
                                      / (vol - self._v_mid_nm3[None, :]))
        self._group_volume, self._group_frames, self._group_start = None, 0, None

    def _lateral_weights(self, area):
        """(p, w) per |dz| bin and r bin for the x/y cross-section `area` (nm^2): the probability of b in
        the bin, and the same given b is not within r (module docstring). The last area's are kept."""
        if self._weights_area != area:
            p = self._ring / area
            with np.errstate(invalid="ignore", divide="ignore"):
                self._weights = p, p / (1.0 - (np.cumsum(p, axis=1) - 0.5 * p))
            self._weights_area = area
        return self._weights

    def _bin_dz_codes(self):
        """Histogram the (A atom, |dz| bin) codes gathered since the last call into the |dz| histograms:
        one bincount over several frames instead of a full-size one per frame."""
        if self._dz_codes:
            codes = np.concatenate(self._dz_codes)
            self._dz_hist += np.bincount(codes, minlength=self._dz_hist.size).reshape(self._dz_hist.shape)
        self._dz_codes, self._dz_pending = [], 0

    def _flush_lateral(self):
        """Add the ideal-gas counts of the |dz| histograms gathered so far (one area) to the expected counts.

        The reference is linear in the |dz| histogram and depends on the frame only through its area,
        so the frames of one area (every frame of a slab box, whose barostat moves z only) share one
        product with the ring integrals instead of one per frame."""
        if self._dz_area is None:
            return
        self._bin_dz_codes()
        p, w = self._lateral_weights(self._dz_area)
        hist = self._dz_hist.astype(np.float64)  # float: the product runs in BLAS
        plain = hist @ p
        self._expected_a += plain
        self._expected_cond_a += hist @ w
        self._expected += plain.sum(axis=0)
        self._dz_hist[:] = 0
        self._dz_area = None

    def _lateral_reference(self, dims, pairs_a, pairs_b, bins):
        """Gather this frame's ideal-gas pair counts per A atom with every B atom at its own height (module
        docstring): its |dz| histogram (turned into counts by :meth:`_flush_lateral`), and at once the
        conditional count's correction. `pairs_a`, `pairs_b`, `bins`: the counted pairs (A index, B index,
        r bin), whose own reference is dropped from the conditional count beyond their distance."""
        if not np.allclose(dims[3:], 90.0):
            raise InputError(f"RDF normalisation 'lateral': frame {self._ts.frame} has a triclinic box "
                             f"{np.asarray(dims[3:]).tolist()}; it needs an orthorhombic slab box")
        L = angstrom_to_nm(np.asarray(dims[:3], dtype=np.float64))
        area = L[0] * L[1]
        if self._dz_area is not None and area != self._dz_area:
            self._flush_lateral()
        self._dz_area = area
        za = angstrom_to_nm(self.group_a.positions[:, 2].astype(np.float64))
        zb = angstrom_to_nm(self.group_b.positions[:, 2].astype(np.float64))
        for owner, b, k in self._dz_window(za, zb, L[2]):
            if self._keep is not None:
                use = self._keep[owner, b]
                owner, k = owner[use], k[use]
            self._dz_codes.append(owner * _DZ_BINS + k)
            self._dz_pending += len(k)
        if self._dz_pending > _DZ_PENDING:
            self._bin_dz_codes()
        if len(bins):
            self._drop_counted_pairs(area, self._dz_bins(za[pairs_a] - zb[pairs_b], L[2]), pairs_a, bins)

    def _drop_counted_pairs(self, area, j, pairs_a, bins):
        """The pairs within r_max are known: drop each from the conditional count of its A atom, half in its
        own r bin and whole in every bin beyond, i.e. subtract sum_pairs w[j, c] ([c > bin] + [c = bin] / 2)
        (a compiled loop over the pairs and their bins beyond: analysis/_kernels.py)."""
        from spemd.analysis._kernels import drop_counted_pairs

        _, w = self._lateral_weights(area)
        drop_counted_pairs(self._expected_cond_a, w, pairs_a.astype(np.int64), j.astype(np.int64),
                           bins.astype(np.int64))

    def _dz_window(self, za, zb, lz):
        """Yields (A index, B index, |dz| bin) of the pairs with |dz| < r_max (minimum image along z), in
        blocks of _A_CHUNK A atoms (memory: at most _A_CHUNK x N_B pairs at a time).

        In a slab box most B atoms lie farther than r_max in z from an A atom: the B heights are sorted
        once (with their images at -lz and +lz) and each A atom takes only its window of them, so the
        work grows with the pairs inside the window, not with N_A N_B (r_max <= lz / 2: one image each)."""
        zb_w = np.mod(zb, lz)
        order = np.argsort(zb_w, kind="stable")
        z_ext = np.concatenate([zb_w[order] - lz, zb_w[order], zb_w[order] + lz])
        b_ext = np.tile(order, 3)
        za_w = np.mod(za, lz)
        first = np.searchsorted(z_ext, za_w - self.r_max_nm, side="left")
        count = np.searchsorted(z_ext, za_w + self.r_max_nm, side="right") - first
        for lo in range(0, len(za), _A_CHUNK):
            sl = slice(lo, lo + _A_CHUNK)
            n = count[sl]
            owner = np.repeat(np.arange(lo, lo + len(n)), n)
            at = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n - first[sl], n)
            k = (np.abs(za_w[owner] - z_ext[at]) * (_DZ_BINS / self.r_max_nm)).astype(np.int64)
            inside = k < _DZ_BINS
            yield owner[inside], b_ext[at][inside], k[inside]

    def _dz_bins(self, dz, lz):
        """|dz| (nm, minimum image along z) as bins of the lateral reference's dz histogram."""
        dz = np.abs(dz - lz * np.round(dz / lz))
        return (dz * (_DZ_BINS / self.r_max_nm)).astype(np.int64)

    def _pairs_within(self, pa, pb, dims):
        """(pairs (n, 2) as (index in A, index in B), distances in A) of all pairs closer than r_max."""
        orthorhombic = np.allclose(dims[3:], 90.0)
        if self.kernel == "capped" or not orthorhombic:
            return capped_distance(pa, pb, self._rmax_A, box=dims, return_distances=True)
        if self.kernel == "all_pairs" or (self.kernel == "auto" and len(pa) * len(pb) <= ALL_PAIRS_MAX):
            return self._all_pairs(pa, pb, np.asarray(dims[:3], dtype=np.float64))
        from scipy.spatial import cKDTree

        L = np.asarray(dims[:3], dtype=np.float64)
        a = np.mod(np.asarray(pa, dtype=np.float64), L)
        b = np.mod(np.asarray(pb, dtype=np.float64), L)
        a[a >= L] = 0.0  # np.mod can round up to L
        b[b >= L] = 0.0
        m = cKDTree(a, boxsize=L).sparse_distance_matrix(cKDTree(b, boxsize=L), self._rmax_A,
                                                         output_type="ndarray")
        return np.column_stack([m["i"], m["j"]]), m["v"]

    def _all_pairs(self, pa, pb, lengths):
        """:meth:`_pairs_within` by the compiled all-pairs loop (analysis/_kernels.py); its output arrays
        start at twice the ideal-gas pair count (at least 4096) and double when a frame holds more."""
        from spemd.analysis._kernels import pairs_within_ortho

        if self._pair_buf is None:
            expected = len(pa) * len(pb) * min(1.0, 4.0 / 3.0 * np.pi * self._rmax_A**3 / float(np.prod(lengths)))
            self._pair_buf = self._new_pair_buf(max(4096, int(2 * expected)))
        while True:
            n = pairs_within_ortho(pa, pb, lengths, self._rmax_A, *self._pair_buf)
            if n >= 0:
                break
            self._pair_buf = self._new_pair_buf(2 * len(self._pair_buf[0]))
        i, j, d = self._pair_buf
        return np.column_stack([i[:n], j[:n]]), d[:n].copy()

    @staticmethod
    def _new_pair_buf(n):
        return np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float64)

    def _conclude(self):
        F = self.n_frames
        if F == 0:
            raise InputError("RDF trajectory: no frames analysed")
        if self.normalisation == "lateral":
            self._flush_lateral()
        else:  # the volume reference: sum_f N shell / V_f = N shell sum_f 1 / V_f
            self._flush_volume()
            self._expected = self._n_pairs * self._shell_nm3 * self._inv_volume_sum
            self._expected_a = self._n_b_of_a[:, None] * self._shell_nm3[None, :] * self._inv_volume_sum
        self._count = self._count_a.sum(axis=0)
        edges = self._edges_nm
        r = self.results
        r.edges_nm = edges
        r.bins_nm = 0.5 * (edges[1:] + edges[:-1])
        r.count = self._count.copy()
        r.n_pairs = self._n_pairs
        r.n_frames = F
        r.cn = np.cumsum(self._count) / (F * len(self.group_a))
        # n(r) per A atom; its standard error over the A atoms (the independent samples)
        n_a = len(self._ia)
        r.cn_sem = (np.cumsum(self._count_a, axis=1).std(axis=0, ddof=1) / (F * np.sqrt(n_a)) if n_a > 1
                    else np.full(self.nbins, np.nan))
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
        r.n_b_per_a = self._n_pairs / len(self._ia)
        # finite-size corrected g, and delete-one-A-atom jackknife replicates (module docstring)
        r.rdf_corrected = self._ratio(self._count, self._expected_cond_a.sum(axis=0))
        if self.r_min_nm != 0.0:
            r.rdf_corrected[:] = np.nan
        g_jk, g_corr_jk = self._jackknife_replicates()
        nan = np.full(self.nbins, np.nan)
        r.rdf_sem = nan if g_jk is None else _jackknife_sem(g_jk)
        r.rdf_corrected_sem = nan.copy() if g_corr_jk is None else _jackknife_sem(g_corr_jk)
        self._jk = (g_jk, g_corr_jk)
        # the minimum on the finite-size corrected g (its tail is 1, so g rises after a shallow minimum)
        # where it exists; peak significance from the counts and the ideal-gas count over the run
        corrected = np.all(np.isfinite(r.rdf_corrected[self._expected > 0]))
        g, sem = (r.rdf_corrected, r.rdf_corrected_sem) if corrected else (r.rdf, r.rdf_sem)
        r.update(first_shell(r.bins_nm, np.nan_to_num(g), r.cn, self._count, self._expected, sem=sem,
                             bounds_nm=self.shell_bounds_nm))
        r.first_shell_cn_sem = (float(np.interp(r.first_shell_radius_nm, r.bins_nm, r.cn_sem))
                                if np.isfinite(r.first_shell_radius_nm) else np.nan)

    def _ratio(self, count, expected):
        """count / expected where expected > 0 (NaN elsewhere, and everywhere unless r_min = 0 for the
        conditional reference, which needs every pair within r)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(expected > 0, count / expected, np.nan)

    def _jackknife_replicates(self):
        """g(r) and corrected g(r) with each A atom left out in turn: (N_A, bins) each; None with one A atom."""
        if len(self._ia) < 2:
            return None, None
        count = self._count[None, :] - self._count_a
        g = self._ratio(count, self._expected[None, :] - self._expected_a)
        g_cond = self._ratio(count, self._expected_cond_a.sum(axis=0)[None, :] - self._expected_cond_a)
        if self.r_min_nm != 0.0:
            g_cond[:] = np.nan
        return g, g_cond

    def window_mean(self, lo_nm, hi_nm, corrected=True):
        """Mean of g over the bins whose centres lie in [lo_nm, hi_nm), with its jackknife standard error.

        Returns {"mean", "sem", "n_bins", "window_nm", "corrected"}; ``corrected`` uses the finite-size
        corrected g (module docstring). Raises ConfigError when no bin centre lies in the window."""
        r = self.results
        sel = (r.bins_nm >= lo_nm) & (r.bins_nm < hi_nm)
        if not np.any(sel):
            raise ConfigError(f"RDF window [{lo_nm}, {hi_nm}) nm: no bin centre inside "
                              f"[{r.bins_nm[0]:.4g}, {r.bins_nm[-1]:.4g}] nm")
        g = r.rdf_corrected if corrected else r.rdf
        reps = self._jk[1 if corrected else 0]
        sem = float("nan") if reps is None else float(_jackknife_sem(np.mean(reps[:, sel], axis=1)[:, None])[0])
        return {"mean": float(np.mean(g[sel])), "sem": sem, "n_bins": int(np.sum(sel)),
                "window_nm": [float(lo_nm), float(hi_nm)], "corrected": bool(corrected)}


def _jackknife_sem(replicates):
    """Delete-one jackknife standard error along axis 0."""
    n = replicates.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins (no ideal-gas count) stay NaN
        return np.sqrt((n - 1) / n * np.nansum((replicates - np.nanmean(replicates, axis=0)) ** 2, axis=0))


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
                min_depth=0.5, smooth_width_nm=0.02, sem=None, bounds_nm=None, k_sigma=2.5):
    """Peaks of g(r), first-shell radius (the first significant minimum after the first peak) and CN there.

    A peak must be a local maximum of lightly smoothed g (running mean over `smooth_width_nm`, >= 3 bins)
    with g >= `min_height`, a prominence of at least 5 % of the highest g and, when counts are given, at
    least `min_count` pairs and an excess over the ideal-gas count of at least `n_sigma` Poisson standard
    deviations (both summed over the smoothing window).

    The minimum: from the first peak on (inside `bounds_nm` = (lo, hi) when given, the physically possible
    first-shell radii of the pair), the running minimum of the smoothed g until g rises significantly
    above it again (by `k_sigma` errors of the smoothed g: the jackknife `sem` averaged over the window,
    or Poisson errors from the counts); a noise dip on the peak's shoulder is not followed by such a rise
    while g keeps falling. The minimum must lie `k_sigma` errors below the peak. Without bounds, a g
    that never rises significantly after the peak before r_max has no first shell (the lowest bin of a
    flat tail is noise, not a shell); with bounds, a minimum at the upper bound counts only if g rises
    significantly beyond the bound before it falls any lower (g still falling there: none). Returns a
    dict; where there is no shell the radius and CN are NaN and
    ``first_shell_reason`` says why (None when found).
    """
    r_nm = np.asarray(r_nm, dtype=float)
    g = np.asarray(g, dtype=float)
    dr = float(np.median(np.diff(r_nm))) if len(r_nm) > 1 else 1.0
    smooth_bins = max(3, 2 * int(round(0.5 * smooth_width_nm / dr)) + 1)
    gs = _smooth(g, smooth_bins)
    err = _smoothed_error(g, sem, count, expected, smooth_bins)
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
        k = lo + int(np.argmax(g[lo:hi]))
        if k not in peaks:
            peaks.append(k)
    bounds = None if bounds_nm is None else (float(bounds_nm[0]), float(bounds_nm[1]))
    out = {"peaks_nm": r_nm[peaks] if peaks else np.array([]), "first_peak_nm": np.nan,
           "first_shell_radius_nm": np.nan, "first_shell_cn": np.nan, "first_minimum_found": False,
           "first_shell_bounds_nm": bounds, "first_shell_reason": None}

    def none(reason):
        out["first_shell_reason"] = reason
        return out

    if not peaks:
        return none("no significant first peak in g(r)")
    p0 = peaks[0]
    out["first_peak_nm"] = float(r_nm[p0])
    A = float(nm_to_angstrom(1.0))  # the reasons speak Angstrom
    if bounds is not None and r_nm[p0] >= bounds[1]:
        return none(f"first peak at {A * r_nm[p0]:.3g} A lies beyond the pair's first-shell bound "
                    f"{A * bounds[1]:.3g} A")
    lo_i = p0 if bounds is None else max(p0, int(np.searchsorted(r_nm, bounds[0])))
    hi_i = len(gs) - 1 if bounds is None else min(len(gs) - 1, int(np.searchsorted(r_nm, bounds[1], "right")) - 1)
    if hi_i <= lo_i:
        return none("no bins between the first peak and the pair's first-shell bound")
    m, rose = lo_i, False
    for i in range(lo_i, hi_i + 1):
        if not np.isfinite(gs[i]):
            continue
        if gs[i] < gs[m] or not np.isfinite(gs[m]):
            m = i
        elif gs[i] - gs[m] > k_sigma * np.hypot(err[i], err[m]):
            rose = True
            break
    if not rose and bounds is not None and m >= hi_i - h:
        # the bounds hold the minimum, not the rise after it: a minimum at the upper bound counts once g
        # rises significantly beyond the bound, and none does if g first falls below it there
        for i in range(hi_i + 1, len(gs)):
            if not np.isfinite(gs[i]):
                continue
            if gs[i] < gs[m]:
                break
            if gs[i] - gs[m] > k_sigma * np.hypot(err[i], err[m]):
                rose = True
                break
    where = f"{A * r_nm[lo_i]:.3g}-{A * r_nm[hi_i]:.3g} A"
    if m == lo_i > p0 and np.nanmin(gs[p0:lo_i]) < gs[m]:
        return none(f"g(r) is lowest before the pair's lower bound {A * r_nm[lo_i]:.3g} A (minimum outside {where})")
    if not rose and (bounds is None or m >= hi_i - h):
        return none(f"g(r) does not rise significantly ({k_sigma:g} errors) after falling from the first peak "
                    f"within {where}: no first minimum" + ("" if bounds is None else " inside the pair's bounds"))
    if gs[p0] - gs[m] <= k_sigma * np.hypot(err[p0], err[m]):
        return none(f"the lowest g(r) within {where} ({gs[m]:.3g}) is not {k_sigma:g} errors below the first "
                    f"peak ({gs[p0]:.3g})")
    out["first_shell_radius_nm"] = float(r_nm[m])
    out["first_shell_cn"] = float(np.asarray(cn)[m])
    out["first_minimum_found"] = True
    return out


def _smoothed_error(g, sem, count, expected, width):
    """Standard error of the running mean of g over `width` bins: from the jackknife `sem` where given
    (bins taken as independent), else Poisson (g / sqrt(count) per bin), else zero."""
    if sem is not None and np.any(np.isfinite(sem)):
        var = np.where(np.isfinite(sem), np.asarray(sem, dtype=float) ** 2, 0.0)
    elif count is not None and expected is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            var = np.where(np.asarray(expected) > 0, np.asarray(count, float) / np.asarray(expected, float) ** 2, 0.0)
    else:
        return np.zeros(len(g))
    return np.sqrt(_smooth(var, width) / width)


RDF_COLUMNS = ("r (nm)", "g(r)", "n(r)", "g(r) SEM", "g(r) finite-size corrected", "g(r) finite-size corrected SEM",
               "n(r) SEM")


def rdf_table(results):
    """(header, columns) of an RDF result for a CSV file: RDF_COLUMNS, one row per bin."""
    return list(RDF_COLUMNS), [results.bins_nm, results.rdf, results.cn, results.rdf_sem, results.rdf_corrected,
                               results.rdf_corrected_sem, results.cn_sem]


def rdf_peaks_angstrom(results) -> list[float]:
    """Peak positions of an RDF result in Angstrom (for reports and plots)."""
    return [float(x) for x in nm_to_angstrom(np.asarray(results.peaks_nm, dtype=float))]


__all__ = ["RDF", "RDF_COLUMNS", "SHELL_BOUNDS_NM", "first_shell", "rdf_peaks_angstrom", "rdf_table"]
