"""The electrolyte's own volume in a box that holds a MOF slab: computed per frame, not configured.

A composite box is periodic in x/y with the slab lying across it; the electrolyte fills the rest of z.
Its volume is the box volume times the fraction of the box height not covered by the slab:

    V_e = V_box * (1 - L_slab / L_z)

L_slab is the length of the union, on the periodic z axis (period L_z, the box height), of the
intervals [z_i - R_i, z_i + R_i] of every slab atom i (R_i its van der Waals radius plus an optional
probe radius). The union is taken on the circle, so a slab split by the periodic boundary is measured
whole; a gap between slab layers wider than their radii counts as electrolyte (pore) volume. Plain boxes (no slab atoms)
are not handled here: their electrolyte volume is the box volume.

The electrolyte is then a film of thickness h = L_z - L_slab (periodic in x/y). For a uniform fluid in
such a film the mean fraction of a sphere of radius r around a film point that lies in the film is

    phi(r) = 1 - r / (2 h)   (r <= h),      phi(r) = h / (2 r)   (r > h)

(average over the centre's height of the covered spherical zone), so the ideal-gas pair count of a
shell is N_pairs * phi(r) * 4 pi r^2 dr / V_e: g(r) of a film normalised by it goes to 1 at large r.
:func:`film_shell_volumes_nm3` integrates phi(r) 4 pi r^2 over bins exactly. It counts the film's own
shell only, valid while r is below the slab thickness (a shell reaching through the slab into the
next film image would add pairs).
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase

from spemd.errors import InputError
from spemd.slab import MOF_RESIDUES, VDW_RADIUS_NM
from spemd.units import angstrom_to_nm, density_g_per_cm3

from spemd.analysis._common import box_volume_nm3, require_box
from spemd.analysis.paper import peo_melt_density_g_cm3

SLAB_SELECTION = "resname " + " ".join(MOF_RESIDUES)



def slab_atoms(universe):
    """The MOF slab's atoms of `universe`, or None for a plain box."""
    group = universe.select_atoms(SLAB_SELECTION)
    return group if len(group) else None


def radii_for_elements_nm(symbols) -> np.ndarray:
    """van der Waals radius (nm) of each element symbol; an unknown element raises InputError naming it."""
    out = np.empty(len(symbols))
    for i, el in enumerate(symbols):
        key = str(el).strip().upper()
        if key not in VDW_RADIUS_NM:
            raise InputError(f"slab atom {i} (element {el!r}): no van der Waals radius; "
                             f"known elements: {', '.join(sorted(VDW_RADIUS_NM))}")
        out[i] = VDW_RADIUS_NM[key]
    return out


def vdw_radii_nm(group) -> np.ndarray:
    """Per-atom van der Waals radius (nm) of an AtomGroup from its elements."""
    try:
        elements = group.elements
    except Exception:  # topology without elements: fall back to the type/name guess MDAnalysis made
        elements = group.types
    return radii_for_elements_nm(elements)


def electrolyte_volume_nm3(slab_z_nm, radii_nm, box_volume_nm3: float, height_nm: float) -> tuple[float, float]:
    """(V_e, film thickness h) for slab atoms at heights `slab_z_nm` in a box of that volume and height."""
    z = np.asarray(slab_z_nm, dtype=float)
    thickness = height_nm - covered_length(z - radii_nm, z + radii_nm, height_nm)
    if not thickness > 0:
        raise InputError(f"electrolyte volume: the slab covers the whole box height ({height_nm:.4g} nm); "
                         "no room for an electrolyte")
    return box_volume_nm3 * thickness / height_nm, thickness


def covered_length(lo, hi, period: float) -> float:
    """Length of the union of intervals [lo_i, hi_i] on a circle of circumference `period`."""
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    if np.any(hi - lo >= period):
        return float(period)
    shift = np.floor(lo / period) * period  # start every interval in [0, period)
    lo, hi = lo - shift, hi - shift
    order = np.argsort(lo)
    lo, hi = lo[order], hi[order]
    # unroll the circle once: intervals reaching past `period` also cover [0, hi - period)
    lo = np.concatenate([lo, lo + period])
    hi = np.concatenate([hi, hi + period])
    # union on [0, 2*period) by a sweep, then keep what falls in [period, 2*period) -- every point of the
    # circle is represented there, including intervals wrapped over from the first copy
    total, cur_lo, cur_hi = 0.0, lo[0], hi[0]
    pieces = []
    for a, b in zip(lo[1:], hi[1:]):
        if a > cur_hi:
            pieces.append((cur_lo, cur_hi))
            cur_lo, cur_hi = a, b
        else:
            cur_hi = max(cur_hi, b)
    pieces.append((cur_lo, cur_hi))
    for a, b in pieces:
        total += max(0.0, min(b, 2 * period) - max(a, period))
    return float(min(total, period))


def film_shell_volumes_nm3(edges_nm, thickness_nm) -> np.ndarray:
    """Bin integrals of phi(r) 4 pi r^2 dr for a film of thickness h (module docstring); h None: plain shells."""
    e = np.asarray(edges_nm, dtype=float)
    if thickness_nm is None:
        return 4.0 / 3.0 * np.pi * np.diff(e**3)
    h = float(thickness_nm)
    # antiderivative of phi(r) 4 pi r^2: 4 pi (r^3/3 - r^4/(8h)) up to h, then pi h r^2 (continuous at r = h)
    inner = lambda r: 4.0 * np.pi * (r**3 / 3.0 - r**4 / (8.0 * h))  # noqa: E731
    at_h = inner(h)
    F = np.where(e <= h, inner(np.minimum(e, h)), at_h + np.pi * h * (e**2 - h**2))
    return np.diff(F)


class ElectrolyteVolume(AnalysisBase):
    """Per-frame electrolyte volume, film thickness and density of a slab box (module docstring).

    Also a callable for :class:`spemd.analysis.rdf.RDF` (``electrolyte=``): ``ev(ts)`` gives
    ``(volume_nm3, thickness_nm)`` of that frame, computed once per frame.

    Results: ``volume_nm3``, ``thickness_nm``, ``density_g_cm3`` (per frame), ``slab_length_nm`` and
    their means ``mean_volume_nm3``, ``mean_density_g_cm3``; ``method`` in words.
    """

    def __init__(self, slab, electrolyte, probe_radius_nm: float = 0.0, **kwargs):
        super().__init__(slab.universe.trajectory, **kwargs)
        if len(slab) == 0:
            raise InputError("ElectrolyteVolume slab: empty atom group; a plain box has no slab (use the box volume)")
        if not probe_radius_nm >= 0:
            raise InputError(f"probe_radius_nm: {probe_radius_nm!r} must be >= 0 nm")
        self.slab = slab
        self.radii_nm = vdw_radii_nm(slab) + float(probe_radius_nm)
        self.probe_radius_nm = float(probe_radius_nm)
        self.electrolyte_mass_amu = float(np.sum(electrolyte.masses))
        self._cache_key = None
        self._cache = None

    def frame_values(self, ts) -> tuple[float, float]:
        """(electrolyte volume nm^3, film thickness nm) of the frame `ts` (the universe must be on it)."""
        key = (ts.frame, tuple(np.asarray(ts.dimensions, dtype=float)))
        if key == self._cache_key:
            return self._cache
        dims = require_box(ts, "electrolyte volume")
        from MDAnalysis.lib.mdamath import triclinic_vectors

        height = float(angstrom_to_nm(triclinic_vectors(np.asarray(dims, dtype=np.float64))[2, 2]))
        z = angstrom_to_nm(np.asarray(self.slab.positions[:, 2], dtype=np.float64))
        self._cache = electrolyte_volume_nm3(z, self.radii_nm, box_volume_nm3(dims), height)
        self._cache_key = key
        return self._cache

    __call__ = frame_values

    def _prepare(self):
        self._vol = np.empty(self.n_frames)
        self._h = np.empty(self.n_frames)

    def _single_frame(self):
        v, h = self.frame_values(self._ts)
        self._vol[self._frame_index] = v
        self._h[self._frame_index] = h

    def _conclude(self):
        r = self.results
        r.volume_nm3 = self._vol.copy()
        r.thickness_nm = self._h.copy()
        r.density_g_cm3 = np.array([density_g_per_cm3(self.electrolyte_mass_amu, v) for v in self._vol])
        r.mean_volume_nm3 = float(self._vol.mean())
        r.mean_density_g_cm3 = float(r.density_g_cm3.mean())
        r.method = ("box volume x (1 - z-extent of the slab atoms incl. their vdW radii"
                    + (f" + probe {self.probe_radius_nm:g} nm" if self.probe_radius_nm else "")
                    + " / box height), per frame")


# ------------------------------------------------------------------------- density reference
#: Volume of one NaTFSI formula unit in the condensed salt (nm^3), the sum of ion volumes of
#: volume-based thermodynamics: TFSI- 0.232 nm^3 (Slattery, Daguenet, Dyson, Schubert, Krossing,
#: Angew. Chem. Int. Ed. 2007, 46, 5384, Table 1, ion volumes from crystal structures) and Na+ as a sphere
#: of its Shannon ionic radius, 0.102 nm for 6-coordination (Shannon, Acta Cryst. A 1976, 32, 751):
#: 4/3 pi 0.102^3 = 0.00444 nm^3. Both transcribed, not re-checked against the printed tables in this
#: project: the reference built from them is flagged "unverified" in its output.
NATFSI_FORMULA_VOLUME_NM3 = 0.232 + 4.0 / 3.0 * np.pi * 0.102**3
NATFSI_VOLUME_SOURCE = ("TFSI- 0.232 nm^3 (Slattery et al., Angew. Chem. Int. Ed. 2007, 46, 5384) + Na+ sphere "
                        "r = 1.02 A (Shannon, Acta Cryst. A 1976, 32, 751)")


def electrolyte_reference_density(temperature_K: float, salt_mass_fraction: float, salt_mass_amu: float) -> dict:
    """Reference density of PEO/NaTFSI by volume additivity: 1/rho = (1 - w)/rho_PEO(T) + w v_salt.

    rho_PEO(T) is the measured salt-free melt (analysis.paper.peo_melt_density_g_cm3, Rodgers 1993);
    v_salt = N_A V_f / M_salt (cm^3/g) from the NaTFSI formula volume V_f above. w = 0 gives the melt.
    Ideal mixing ignores the salt's electrostriction of the ether oxygens (a contraction), so the true
    density is expected at or above this estimate.
    """
    w = float(salt_mass_fraction)
    if not 0 <= w < 1:
        raise InputError(f"salt_mass_fraction: {w!r} must be >= 0 and < 1")
    melt = peo_melt_density_g_cm3(temperature_K)
    v_salt = 1.0 / density_g_per_cm3(salt_mass_amu, NATFSI_FORMULA_VOLUME_NM3)  # cm^3/g
    rho = 1.0 / ((1.0 - w) / melt["density_g_cm3"] + w * v_salt)
    if w == 0:
        return melt | {"model": "measured salt-free melt", "verified": not melt["extrapolated"]}
    return {"density_g_cm3": rho, "material": f"PEO/NaTFSI, {100 * w:.1f} wt% salt (volume-additive)",
            "source": f"{melt['source']}; salt: {NATFSI_VOLUME_SOURCE}", "valid_range_K": melt["valid_range_K"],
            "extrapolated": melt["extrapolated"], "salt_mass_fraction": w, "salt_specific_volume_cm3_per_g": v_salt,
            "melt_density_g_cm3": melt["density_g_cm3"],
            "model": "ideal volume additivity of the PEO melt and the condensed salt", "verified": False}


__all__ = ["SLAB_SELECTION", "VDW_RADIUS_NM", "ElectrolyteVolume", "covered_length",
           "electrolyte_volume_nm3", "film_shell_volumes_nm3", "radii_for_elements_nm", "slab_atoms",
           "vdw_radii_nm", "electrolyte_reference_density", "NATFSI_FORMULA_VOLUME_NM3"]
