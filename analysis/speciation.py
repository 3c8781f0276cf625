"""Na+ speciation against the distance from the slab face, and the free-TFSI- fraction.

With r_c the Na-O(TFSI) first-shell radius (given; analysis/production.py passes the one it used for
analysis/pairing.py), a Na+ i and an anion a are in contact in frame t when some O of a lies within r_c
of i (minimum image). Per frame each Na+ is

    free (no anion in contact), CIP (one), AGG (two or more distinct anions),

as in analysis/pairing.py, and each anion is free when no Na+ is in contact with it:

    f_free,TFSI(t) = (anions with no Na+ within r_c of any of their O) / (all anions),

the quantity set beside the paper's Raman free-anion fraction (a spectroscopic count, not the same
definition: experiment). Fractions are time means with block errors (analysis/_layers.py).

With a slab, every Na+ is also binned by its signed face distance d (spemd.slab.face_distance_nm,
bins of ``bin_nm`` from -depth_nm): per bin, the free/CIP/AGG fractions of the Na+ found there over
all frames (pooled counts; the error is the block error of the per-block pooled fractions).

Free fractions against the cutoff: for every r on CUTOFF_GRID_NM (and whether or not r_c is known),
the free-Na+ fraction (no TFSI- O within r) and the free-TFSI- fraction (no Na+ within r of any of its O),
from each ion's nearest partner distance per frame, with block errors. The study reads them at one
radius common to all systems (analysis/study_shell.py), so that fractions are compared at one cutoff.

Preconditions: r_c > 0 (None or NaN: no first shell was found, and every result but the curves is null
with the reason), periodic box every frame.
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase
from MDAnalysis.lib.distances import capped_distance

from spemd.errors import ConfigError
from spemd.units import nm_to_angstrom

from spemd.analysis._common import check_atomgroup, require_box
from spemd.analysis._layers import N_BLOCKS, block_mean_sem, face_distances, frame_geometry

CLASSES = ("free", "CIP", "AGG")
#: cutoffs (nm) of the free-fraction curves: the Na-O(TFSI) first-shell bounds (2.8-4.0 A) and beyond
CUTOFF_GRID_NM = np.round(np.arange(0.25, 0.4501, 0.005), 4)


class Speciation(AnalysisBase):
    """Free/CIP/AGG Na+ overall and against the face distance, and the free-TFSI- fraction (module docstring).

    Parameters
    ----------
    cations : AtomGroup (Na)
    anion_atoms : AtomGroup (O of TFSI), anions told apart by residue
    shell_radius_nm : float or None, r_c
    slab : AtomGroup or None (a plain box: no distance bins)

    Results: ``reason`` (None, or why there are no numbers), ``fractions`` {free, CIP, AGG,
    free_TFSI: (mean, SEM)}, ``cutoff_grid_nm`` with ``free_vs_cutoff`` {"free_Na", "free_TFSI": (mean, SEM)
    arrays over the grid}, and with a slab ``edges_nm``, ``d_nm``, ``by_distance`` {class: fraction
    per bin}, ``by_distance_sem``, ``na_per_bin`` (Na+ counted per bin over all frames).
    """

    def __init__(self, cations, anion_atoms, shell_radius_nm, slab=None, bin_nm=0.25, depth_nm=1.0, **kwargs):
        super().__init__(cations.universe.trajectory, **kwargs)
        self.cations = check_atomgroup(cations, "speciation cations")
        self.anion_atoms = check_atomgroup(anion_atoms, "speciation anion atoms")
        self.slab = slab
        rc = shell_radius_nm
        self.reason = None
        if rc is None or (isinstance(rc, float) and not np.isfinite(rc)):
            self.reason = "no Na-O(TFSI) first-shell radius (no first minimum of g(r)); speciation needs one"
        elif not (isinstance(rc, (int, float)) and rc > 0):
            raise ConfigError(f"shell_radius_nm: {rc!r} must be a positive radius (nm) or null")
        self.rc_nm = None if self.reason else float(rc)
        if not (bin_nm > 0 and depth_nm >= 0):
            raise ConfigError(f"bin_nm {bin_nm!r} must be > 0 and depth_nm {depth_nm!r} >= 0")
        self.bin_nm, self.depth_nm = float(bin_nm), float(depth_nm)

    def _prepare(self):
        res = self.anion_atoms.resindices
        self._anion_of = np.unique(res, return_inverse=True)[1]  # O atom -> anion 0..n_anions-1
        self._n_anions = int(self._anion_of.max()) + 1
        self._grid_A = nm_to_angstrom(CUTOFF_GRID_NM)
        self._curves = np.zeros((self.n_frames, 2, len(CUTOFF_GRID_NM)))
        self._cut_A = None if self.reason else float(nm_to_angstrom(self.rc_nm))
        self._frac = np.zeros((self.n_frames, 4))
        self._edges = None
        self._binned = []  # per frame: (bin index, class) counts, shape (n_bins, 3)

    def _single_frame(self):
        dims = require_box(self._ts, "speciation trajectory")
        reach = max(self._cut_A or 0.0, float(self._grid_A[-1]))
        pairs, dist = capped_distance(self.cations.positions, self.anion_atoms.positions, reach, box=dims)
        nc, na_ = len(self.cations), self._n_anions
        # nearest partner of each Na+ and each anion: free at cutoff r when it lies beyond r
        near_na, near_anion = np.full(nc, np.inf), np.full(na_, np.inf)
        np.minimum.at(near_na, pairs[:, 0], dist)
        np.minimum.at(near_anion, self._anion_of[pairs[:, 1]], dist)
        self._curves[self._frame_index] = [np.mean(near_na[:, None] > self._grid_A, axis=0),
                                           np.mean(near_anion[:, None] > self._grid_A, axis=0)]
        if self.reason:
            return
        pairs = pairs[dist <= self._cut_A]
        keys = np.unique(pairs[:, 0].astype(np.int64) * na_ + self._anion_of[pairs[:, 1]])
        n_anions = np.bincount(keys // na_, minlength=nc)
        cls = np.minimum(n_anions, 2)
        bound_anions = len(np.unique(keys % na_))
        self._frac[self._frame_index] = [*(np.bincount(cls, minlength=3) / nc), 1.0 - bound_anions / na_]
        if self.slab is None:
            return
        height, _, slab_z = frame_geometry(self._ts, self.slab, "speciation trajectory")
        d = face_distances(self.cations, slab_z, height)
        if self._edges is None:
            top = float(np.max(d)) + self.bin_nm
            n_bins = int(np.ceil((top + self.depth_nm) / self.bin_nm))
            self._edges = -self.depth_nm + self.bin_nm * np.arange(n_bins + 1)
        b = np.searchsorted(self._edges, d, side="right") - 1
        ok = (b >= 0) & (b < len(self._edges) - 1)
        counts = np.zeros((len(self._edges) - 1, 3))
        np.add.at(counts, (b[ok], cls[ok]), 1)
        self._binned.append(counts)

    def _conclude(self):
        r = self.results
        r.reason, r.shell_radius_nm = self.reason, self.rc_nm
        r.classification = "Na+ by distinct anions with an O within r_c: 0 free, 1 CIP, >=2 AGG; TFSI- free: no Na+"
        r.cutoff_grid_nm = CUTOFF_GRID_NM
        r.free_vs_cutoff = {}
        for k, name in enumerate(("free_Na", "free_TFSI")):
            mean, sem = block_mean_sem(self._curves[:, k, :])
            r.free_vs_cutoff[name] = (mean, sem)
        if self.reason:
            r.fractions = None
            return
        mean, sem = block_mean_sem(self._frac)
        r.fractions = {name: (float(m), float(e)) for name, m, e in zip((*CLASSES, "free_TFSI"), mean, sem)}
        if self.slab is None:
            return
        counts = np.asarray(self._binned)  # (frames, bins, 3)
        r.edges_nm = self._edges
        r.d_nm = 0.5 * (self._edges[1:] + self._edges[:-1])
        total = counts.sum(axis=(0, 2))
        r.na_per_bin = total
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled = counts.sum(axis=0) / total[:, None]
            nb = min(N_BLOCKS, len(counts))
            blocks = np.array([b.sum(axis=0) / b.sum(axis=(0, 2))[:, None] for b in np.array_split(counts, nb)])
        _, sem = block_mean_sem(blocks, n_blocks=nb)
        r.by_distance = {c: pooled[:, k] for k, c in enumerate(CLASSES)}
        r.by_distance_sem = {c: sem[:, k] for k, c in enumerate(CLASSES)}
