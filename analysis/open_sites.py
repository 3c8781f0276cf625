"""Occupancy of the MOF slab's surface open metal sites, and how long an anion stays on a site.

Sites. A paddlewheel metal (residues ``FE NI CU``) has its axial (open) site at

    s = r_M + AXIAL_SITE_NM * (r_M - r_P) / |r_M - r_P|,

r_P its paddlewheel partner (the nearest other metal, minimum image; M-M 0.263 nm). The metal is a
surface open site when s lies within ``EXPOSED_FACE_NM`` of a slab face or beyond it, i.e. its signed
face distance (spemd.slab.face_distance_nm) is >= -EXPOSED_FACE_NM: the same rule systems/mof.py
counts ``n_metal_sites_exposed`` with. The slab is rigid, so the sites are found on the first frame.
Site types: ``Fe``, ``Ni``, ``Cu`` for one-metal hosts; ``Fe(FeNi)`` and ``Ni(FeNi)`` when both
metals are present.

Occupancy. A site is occupied by species X in frame t when an atom of X lies within r_site of the
metal (minimum image). Per site type and frame, f_X(t) = occupied sites / sites; reported as the
time mean with the block error of analysis/_layers.py. Species: ``O_TFSI`` (TFSI- O), ``NF_TFSI``
(TFSI- N or F), ``O_ether`` (PEO ether O).

r_site. Per site type, configured, or the first minimum of the metal-O g(r) (analysis.rdf.first_shell),
or, where that g(r) has no significant minimum, ``r_site_fallback_nm`` (source says so and why),
O = the electrolyte's O that can bind an open site (TFSI- O and ether O: the first shell is the site's
O shell whichever ligand fills it), from distances up to ``r_max_nm``, with the ideal-gas reference of
a whole sphere at the mean density of those O in the box, g(r) = n(r, r+dr) / (N_sites T rho_O 4 pi r^2
dr): a surface site sees about half a sphere of electrolyte, so g is scaled down by about 2, but where
its minimum lies is unchanged. The same r_site is used for all three species.

Residence. A (site, anion) pair is bound in frame t when any O of that TFSI- lies within r_site of
the site metal; the continuous and intermittent correlations and the residence times are those of
analysis/pairing.py (residence_correlations, residence_time: tau = integral of C to the longest lag,
flagged as a lower bound when C has not fallen below 1/e).

Without a surface open site ``reason`` says so and there are no site types. Preconditions: a slab
box (residues BTC FMT FE NI CU), a periodic box every frame, equally spaced frames;
r_site <= r_max_nm < half the shortest box width.
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase
from MDAnalysis.lib.distances import capped_distance, distance_array, minimize_vectors

from spemd.errors import ConfigError
from spemd.slab import AXIAL_SITE_NM, EXPOSED_FACE_NM, face_distance_nm
from spemd.units import angstrom_to_nm, nm_to_angstrom

from spemd.analysis._common import box_volume_nm3, check_atomgroup, frame_spacing_ps, require_box
from spemd.analysis._layers import block_mean_sem, frame_geometry
from spemd.analysis.pairing import residence_correlations, residence_time
from spemd.analysis.rdf import first_shell

SPECIES = ("O_TFSI", "NF_TFSI", "O_ether")


def site_types(metals) -> list[str]:
    """The site type of every metal atom: its element, with "(FeNi)" when both Fe and Ni are present."""
    names = [str(r).upper() for r in metals.resnames]
    mixed = "FE" in names and "NI" in names
    pretty = {"FE": "Fe", "NI": "Ni", "CU": "Cu"}
    return [pretty[n] + ("(FeNi)" if mixed and n in ("FE", "NI") else "") for n in names]


class OpenSiteOccupancy(AnalysisBase):
    """Surface open-site occupancy per site type and the anions' site residence times (module docstring).

    Parameters
    ----------
    metals : AtomGroup, the slab's metal atoms (``resname FE NI CU``)
    slab : AtomGroup, the whole slab (its outermost atoms are the faces)
    o_tfsi, nf_tfsi, o_ether : AtomGroups of the three ligand species (N/F and ether O may be None or empty:
        that species is not reported)
    r_site_nm : None (first minimum of g(r)), a radius (nm) for every site type, or {site type: radius}
    r_max_nm : float, range of the metal-O distances kept (g(r) and the r_site search)
    r_site_fallback_nm : None, or the radius (nm) of a type whose g(r) has no significant first minimum

    Results: ``reason`` (None, or why there are no sites), ``site_types`` {type: {n_sites, r_site_nm,
    r_site_source, occupancy {species: mean}, occupancy_sem {species: SEM}, tau_continuous_ps,
    tau_intermittent_ps, tau_*_lower_bound, reason (why a type has no numbers, else None)}},
    ``series`` {type: {species: f(t)}}, ``rdf`` {type: (r_nm, g)}, ``lagtimes_ps``,
    ``c_continuous`` / ``c_intermittent`` {type: C(t)}.
    """

    def __init__(self, metals, slab, o_tfsi, nf_tfsi=None, o_ether=None, r_site_nm=None, r_max_nm=0.6, bins=120,
                 r_site_fallback_nm=None, **kwargs):
        super().__init__(metals.universe.trajectory, **kwargs)
        self.metals = check_atomgroup(metals, "open-site metals")
        self.slab = check_atomgroup(slab, "open-site slab")
        self.groups = {"O_TFSI": check_atomgroup(o_tfsi, "open-site TFSI O"),  # the residence needs the anion O
                       "NF_TFSI": nf_tfsi if nf_tfsi is not None and len(nf_tfsi) else None,
                       "O_ether": o_ether if o_ether is not None and len(o_ether) else None}
        if not (np.isfinite(r_max_nm) and r_max_nm > 0):
            raise ConfigError(f"r_max_nm: {r_max_nm!r} must be a positive distance (nm)")
        self.r_max_nm, self.bins = float(r_max_nm), int(bins)
        self.r_site_nm = r_site_nm
        if r_site_fallback_nm is not None and not (isinstance(r_site_fallback_nm, (int, float))
                                                   and 0 < r_site_fallback_nm <= self.r_max_nm):
            raise ConfigError(f"r_site_fallback_nm: {r_site_fallback_nm!r} must be null or a radius in "
                              f"(0, {self.r_max_nm}] nm")
        self.r_site_fallback_nm = r_site_fallback_nm

    def _find_sites(self, dims):
        pos = self.metals.positions.astype(np.float64)
        d = distance_array(pos, pos, box=dims)
        np.fill_diagonal(d, np.inf)
        partner = np.argmin(d, axis=1)
        axis = minimize_vectors(pos - pos[partner], dims)
        axis /= np.linalg.norm(axis, axis=1)[:, None]
        site_z = angstrom_to_nm(pos[:, 2]) + AXIAL_SITE_NM * axis[:, 2]
        height, _, slab_z = frame_geometry(self._ts, self.slab, "open-site trajectory")
        exposed = face_distance_nm(site_z, slab_z, height) >= -EXPOSED_FACE_NM
        self._site_idx = np.flatnonzero(exposed)
        if not len(self._site_idx):
            self._reason = (f"no metal has its axial site within {EXPOSED_FACE_NM} nm of a slab face "
                            "(spemd.slab.EXPOSED_FACE_NM): no surface open sites")
        types = np.asarray(site_types(self.metals))[self._site_idx]
        self._types = sorted(set(types))
        self._type_of_site = np.array([self._types.index(t) for t in types])

    def _prepare(self):
        self._site_idx, self._reason, self._types = None, None, []
        self._cap_A = float(nm_to_angstrom(self.r_max_nm))
        self._pairs = {s: [] for s in SPECIES}  # per frame: (site, residue or atom, distance nm)
        self._n_o = sum(len(self.groups[k]) for k in ("O_TFSI", "O_ether") if self.groups[k] is not None)
        self._volumes = np.zeros(self.n_frames)

    def _single_frame(self):
        dims = require_box(self._ts, "open-site trajectory")
        self._volumes[self._frame_index] = box_volume_nm3(dims)
        if self._site_idx is None:
            self._find_sites(dims)
        if self._reason:
            return
        sites = self.metals.positions[self._site_idx]
        for sp in SPECIES:
            g = self.groups[sp]
            if g is None:
                continue
            pairs, dist = capped_distance(sites, g.positions, self._cap_A, box=dims)
            ids = g.resindices[pairs[:, 1]] if sp == "O_TFSI" else pairs[:, 1]
            self._pairs[sp].append((pairs[:, 0], ids, angstrom_to_nm(dist)))

    def _configured_radius(self, t):
        """The configured r_site (nm) of site type `t`, or None."""
        given = self.r_site_nm.get(t) if isinstance(self.r_site_nm, dict) else self.r_site_nm
        if given is not None and not (isinstance(given, (int, float)) and 0 < given <= self.r_max_nm):
            raise ConfigError(f"r_site_nm for {t}: {given!r} must be a radius in (0, {self.r_max_nm}] nm")
        return given

    def _conclude(self):
        r = self.results
        F = self.n_frames
        edges = np.linspace(0.0, self.r_max_nm, self.bins + 1)
        centres = 0.5 * (edges[1:] + edges[:-1])
        shell = 4.0 / 3.0 * np.pi * np.diff(edges ** 3)
        rho_o = self._n_o / float(np.mean(self._volumes))
        r.reason = self._reason
        r.site_types, r.series, r.rdf, r.c_continuous, r.c_intermittent = {}, {}, {}, {}, {}
        dt = frame_spacing_ps(self.times, "open-site trajectory") if F >= 2 else np.nan
        r.lagtimes_ps = np.arange(F) * dt
        for k, t in enumerate(self._types):
            mine = self._type_of_site == k
            n_sites = int(mine.sum())
            local = np.cumsum(mine) - 1  # site index -> index among this type's sites
            count = np.zeros(self.bins)
            for s_idx, _, dist in self._pairs["O_TFSI"] + self._pairs["O_ether"]:
                count += np.histogram(dist[mine[s_idx]], bins=edges)[0]
            expected = n_sites * F * rho_o * shell
            g = count / expected
            r.rdf[t] = (centres, g)
            rc, source, reason = self._configured_radius(t), "configured", None
            if rc is None:
                shell_fit = first_shell(centres, g, np.cumsum(count) / (n_sites * F), count=count, expected=expected)
                rc = float(shell_fit["first_shell_radius_nm"])
                source = "first minimum of the metal-O (TFSI- O and ether O) g(r)"
                if not np.isfinite(rc) and self.r_site_fallback_nm is not None:
                    rc = float(self.r_site_fallback_nm)
                    source = f"fallback r_site_fallback_nm (the {t}-O g(r): {shell_fit['first_shell_reason']})"
                elif not np.isfinite(rc):
                    reason = (f"no first minimum of the {t}-O g(r) within {self.r_max_nm} nm "
                              "(no O bound long enough); configure r_site_nm")
            out = {"n_sites": n_sites, "r_site_nm": rc if np.isfinite(rc) else None, "r_site_source": source,
                   "occupancy": None, "occupancy_sem": None, "tau_continuous_ps": None, "tau_intermittent_ps": None,
                   "tau_continuous_lower_bound": None, "tau_intermittent_lower_bound": None, "reason": reason}
            r.site_types[t] = out
            if reason:
                continue
            series = {}
            for sp in SPECIES:
                if self.groups[sp] is None:
                    continue
                f = np.zeros(F)
                for i, (s_idx, _, dist) in enumerate(self._pairs[sp]):
                    hit = mine[s_idx] & (dist < rc)
                    f[i] = len(np.unique(s_idx[hit])) / n_sites
                series[sp] = f
            r.series[t] = series
            stats = {sp: block_mean_sem(f) for sp, f in series.items()}
            out["occupancy"] = {sp: float(m) for sp, (m, _) in stats.items()}
            out["occupancy_sem"] = {sp: float(e) for sp, (_, e) in stats.items()}
            if F < 2:
                continue
            n_res = int(self.groups["O_TFSI"].universe.residues.n_residues)
            frames = []
            for s_idx, res, dist in self._pairs["O_TFSI"]:
                hit = mine[s_idx] & (dist < rc)
                frames.append(np.unique(local[s_idx[hit]].astype(np.int64) * n_res + res[hit]))
            cc, ci = residence_correlations(frames)
            r.c_continuous[t], r.c_intermittent[t] = cc, ci
            for name, c in (("continuous", cc), ("intermittent", ci)):
                tau, lower = residence_time(r.lagtimes_ps, c)
                out[f"tau_{name}_ps"], out[f"tau_{name}_lower_bound"] = tau, lower
        r.residence_definition = ("(site, TFSI-) bound while any O of the anion is within r_site of the site metal; "
                                  "continuous and intermittent correlation as analysis/pairing.py")
