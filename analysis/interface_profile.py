"""Number-density profiles against the distance from the nearest slab face, and surface excesses.

Distance d: the signed face distance of spemd.slab.face_distance_nm (both faces folded; 0 at the
slab's outermost atom centres, > 0 in the film, < 0 inside the slab's z-extent, e.g. in its pores).
With A the x/y cell area and both faces contributing, the number density of species X in a bin
[d, d + dd) of frame t is

    rho_X(d, t) = N_X(d, d + dd; t) / (2 A dd)    (nm^-3),

averaged over frames with block errors (analysis/_layers.py). Inside the slab's extent (d < 0) the
same formula gives atoms per slab-box volume, not per volume the electrolyte can reach.

Surface excess within the layer 0 <= d < L (L = ``layer_nm``, 1 nm), per face area:

    Gamma_X(t) = N_X(0 <= d < L; t) / (2 A) - rho_X^bulk(t) L,
    rho_X^bulk(t) = N_X(d >= L; t) / (2 A (h(t) - L)),

h(t) the film's half thickness: Gamma = 0 for a uniform film. Reported as the time mean with its
block error (nm^-2). Atoms inside the slab's extent count in neither term.

Species: ``Na`` (Na+), ``TFSI`` (its N atom), ``O_ether``. Preconditions: a slab box with a film more
than 2 L thick (else Gamma is null with the reason), periodic box every frame.
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase

from spemd.errors import ConfigError
from spemd.slab import film_gap

from spemd.analysis._common import check_atomgroup
from spemd.analysis._layers import block_mean_sem, face_distances, frame_geometry


class InterfaceProfile(AnalysisBase):
    """rho(d) and Gamma per species (module docstring).

    Parameters
    ----------
    groups : {name: AtomGroup}, one atom per particle (Na, N of TFSI, ether O)
    slab : AtomGroup, the whole slab
    layer_nm : float, the interfacial layer's width L
    bin_nm : float, profile bin width
    depth_nm : float, how far into the slab's extent the profile reaches

    Results: ``edges_nm``, ``d_nm`` (bin centres), ``density_nm3`` / ``density_sem_nm3`` {name: array},
    ``excess`` {name: {gamma_per_nm2, gamma_sem_per_nm2, bulk_density_nm3, bulk_density_sem_nm3,
    in_slab_per_nm2}}, ``excess_reason`` (None, or why Gamma is not reported), ``half_film_nm_mean``.
    """

    def __init__(self, groups: dict, slab, layer_nm=1.0, bin_nm=0.05, depth_nm=1.0, **kwargs):
        first = next(iter(groups.values()))
        super().__init__(first.universe.trajectory, **kwargs)
        self.groups = {k: check_atomgroup(g, f"profile group {k}") for k, g in groups.items()}
        self.slab = check_atomgroup(slab, "profile slab")
        for key, v in (("layer_nm", layer_nm), ("bin_nm", bin_nm), ("depth_nm", depth_nm)):
            if not (isinstance(v, (int, float)) and v > 0):
                raise ConfigError(f"{key}: {v!r} must be a positive length (nm)")
        self.layer_nm, self.bin_nm, self.depth_nm = float(layer_nm), float(bin_nm), float(depth_nm)

    def _prepare(self):
        self._edges = None
        self._counts = {k: [] for k in self.groups}
        self._layer = {k: np.zeros(self.n_frames) for k in self.groups}
        self._bulk = {k: np.zeros(self.n_frames) for k in self.groups}
        self._in_slab = {k: np.zeros(self.n_frames) for k in self.groups}
        self._area = np.zeros(self.n_frames)
        self._half = np.zeros(self.n_frames)

    def _single_frame(self):
        height, area, slab_z = frame_geometry(self._ts, self.slab, "profile trajectory")
        lo, hi = film_gap(slab_z, height)
        half = 0.5 * (hi - lo)
        if self._edges is None:  # fixed on the first frame; a later, thicker film's centre spills into the last bin
            n = int(np.ceil((half + self.depth_nm) / self.bin_nm))
            self._edges = -self.depth_nm + self.bin_nm * np.arange(n + 1)
        i = self._frame_index
        self._area[i], self._half[i] = area, half
        for k, g in self.groups.items():
            d = face_distances(g, slab_z, height)
            inside = d[d >= self._edges[0]]
            self._counts[k].append(np.histogram(np.minimum(inside, self._edges[-1] - 1e-9), bins=self._edges)[0])
            self._layer[k][i] = np.count_nonzero((d >= 0) & (d < self.layer_nm))
            self._bulk[k][i] = np.count_nonzero(d >= self.layer_nm)
            self._in_slab[k][i] = np.count_nonzero(d < 0)

    def _conclude(self):
        r = self.results
        r.edges_nm = self._edges
        r.d_nm = 0.5 * (self._edges[1:] + self._edges[:-1])
        r.density_nm3, r.density_sem_nm3, r.excess = {}, {}, {}
        r.half_film_nm_mean = float(np.mean(self._half))
        norm = 2.0 * self._area[:, None] * self.bin_nm
        thick = self._half - self.layer_nm
        r.excess_reason = None
        if not np.all(thick > 0):
            r.excess_reason = (f"the film's half thickness ({np.min(self._half):.3g} nm) is not more than the layer "
                               f"width {self.layer_nm:g} nm: no bulk beyond the layer to measure an excess against")
        for k in self.groups:
            rho = np.asarray(self._counts[k], dtype=float) / norm
            r.density_nm3[k], r.density_sem_nm3[k] = block_mean_sem(rho)
            out = {"gamma_per_nm2": None, "gamma_sem_per_nm2": None, "bulk_density_nm3": None,
                   "bulk_density_sem_nm3": None,
                   "in_slab_per_nm2": float(np.mean(self._in_slab[k] / (2.0 * self._area)))}
            if r.excess_reason is None:
                bulk = self._bulk[k] / (2.0 * self._area * thick)
                gamma = self._layer[k] / (2.0 * self._area) - bulk * self.layer_nm
                (g_m, g_e), (b_m, b_e) = block_mean_sem(gamma), block_mean_sem(bulk)
                out.update(gamma_per_nm2=float(g_m), gamma_sem_per_nm2=float(g_e),
                           bulk_density_nm3=float(b_m), bulk_density_sem_nm3=float(b_e))
            r.excess[k] = out
        r.layer_nm = self.layer_nm
