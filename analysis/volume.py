"""The electrolyte of a box that holds a MOF slab: its own volume and its density, computed per frame.

A composite box is periodic in x/y with a rigid slab lying across it; the electrolyte fills the rest of
z and soaks into the slab's surface pores, while the slab's inner cages stay empty. Two quantities,
both computed from the atoms, none configured (plain boxes, with no slab atoms, are not handled here:
their electrolyte is the box):

Occupied volume V_e (:func:`occupied_volume_nm3`), for carrier densities (Nernst-Einstein,
Einstein-Helfand) and the electrolyte density M_e / V_e. Space is divided among all atoms by the power
(radical Voronoi) diagram with their van der Waals radii R_i -- a point x belongs to the atom minimising
|x - x_i|^2 - R_i^2 -- and V_e is the volume of the cells of electrolyte atoms, counted on a periodic
grid (``spacing_nm``), up to ``REACH_NM`` from the owning atom's centre. Pore space next to the slab
goes to whichever side is nearer, so electrolyte that has soaked into a pore brings its volume with it
and empty cages belong to the framework. REACH_NM (0.35 nm) caps how far an electrolyte atom claims
into an empty cage; in the dense bulk every point lies within 0.35 nm of an atom centre (measured on the
default PEO box: 99.9 % within 0.29 nm, all within 0.345 nm), so a plain box's V_e is its box volume.

Film-centre density rho_c (:func:`film_centre_density_g_cm3`), the density the NPT plateau and the
study's density check compare with a plain box: the electrolyte mass whose atom centres lie in the band
of the film more than ``FILM_CENTRE_CLEARANCE_NM`` from the slab's outermost atom centres, over the
band's volume A_xy x (h - 2 clearance), h the gap between the slab's faces on the periodic z axis. The
layered first adsorbed layer and the pores are outside the band, so rho_c is what the barostat sets
(the film's bulk at the stage's pressure); M_e / V_e is lower than a bulk density by the interfacial
gaps that the power diagram gives the electrolyte.

The band's composition: the host draws salt to its surface (TFSI- onto the open metal sites, Na+ with
it), so the film centre holds less salt than the electrolyte as a whole, and PEO/NaTFSI is denser the
more salt it holds. rho_c therefore differs from a plain box's density by composition as well as by
packing. Given the salt's atoms, the band's salt mass fraction w_c = M_salt,c / M_c and the polymer's
partial density rho_p,c = (1 - w_c) rho_c are computed per frame. The like-for-like comparison with a
plain box is rho_c against the reference at w_c (:func:`electrolyte_reference_density`), as the study
does; rho_p,c equals a plain box's (1 - w) rho only at equal w, since the salt takes volume too.

g(r) of a slab box is not normalised by a volume at all (:class:`spemd.analysis.rdf.RDF`,
``normalisation="lateral"``): its ideal-gas reference keeps each B atom at its own height.
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase

from spemd.errors import InputError
from spemd.slab import FILM_CENTRE_CLEARANCE_NM, MOF_RESIDUES, VDW_RADIUS_NM, film_centre_band, film_centre_density_g_cm3, film_gap
from spemd.units import angstrom_to_nm, density_g_per_cm3

from spemd.analysis._common import require_box
from spemd.analysis.paper import peo_melt_density_g_cm3

SLAB_SELECTION = "resname " + " ".join(MOF_RESIDUES)

#: radii of the power diagram: the slab's van der Waals radii (spemd.slab, Bondi) and, for the Na+ ion,
#: its Shannon ionic radius for 6-coordination, 0.102 nm (Shannon, Acta Cryst. A 1976, 32, 751) -- Bondi's
#: 0.227 nm is the neutral atom's
POWER_RADIUS_NM = dict(VDW_RADIUS_NM) | {"NA": 0.102}

#: how far from its centre an atom's power cell counts (module docstring)
REACH_NM = 0.35

#: grid spacing of the occupied volume: 0.1 and 0.05 nm agree to 0.05 % on the default CPE box
GRID_SPACING_NM = 0.1


def slab_atoms(universe):
    """The MOF slab's atoms of `universe`, or None for a plain box."""
    group = universe.select_atoms(SLAB_SELECTION)
    return group if len(group) else None


def radii_for_elements_nm(symbols, table=POWER_RADIUS_NM) -> np.ndarray:
    """Radius (nm) of each element symbol from `table`; an unknown element raises InputError naming it."""
    out = np.empty(len(symbols))
    for i, el in enumerate(symbols):
        key = str(el).strip().upper()
        if key not in table:
            raise InputError(f"atom {i} (element {el!r}): no radius for it; known elements: {', '.join(sorted(table))}")
        out[i] = table[key]
    return out


def _elements(group):
    try:
        return group.elements
    except Exception:  # topology without elements: fall back to the type/name guess MDAnalysis made
        return group.types


def occupied_volume_nm3(positions_nm, box_lengths_nm, radii_nm, is_electrolyte, spacing_nm: float = GRID_SPACING_NM,
                        reach_nm: float = REACH_NM) -> float:
    """Volume (nm^3) of the electrolyte atoms' power cells within `reach_nm` of their centres (module docstring).

    Orthorhombic periodic box; grid points at the centres of cells of about `spacing_nm`. Each atom
    stamps the grid points near it, keeping the least power per point (analysis/_kernels.py,
    :func:`power_owned_points`: exact, and ~0.05 s for the 53,000-atom CPE-10 box of config/paper.yaml).
    """
    from spemd.analysis._kernels import power_owned_points

    L = np.asarray(box_lengths_nm, dtype=float)
    pos = np.mod(np.asarray(positions_nm, dtype=float), L)
    pos[pos >= L] = 0.0  # np.mod can round up to L
    radii = np.asarray(radii_nm, dtype=float)
    is_e = np.asarray(is_electrolyte, dtype=bool)
    n = np.maximum(1, np.ceil(L / spacing_nm).astype(np.int64))
    owned = power_owned_points(np.ascontiguousarray(pos), np.ascontiguousarray(radii), is_e, L, n, float(reach_nm))
    return owned * float(np.prod(L / n))


class ElectrolyteVolume(AnalysisBase):
    """Occupied volume, its density and the film-centre density of the electrolyte of a slab box (module docstring).

    The film-centre density (and, with `salt`, the band's salt mass fraction and polymer partial density)
    is computed on every frame; the occupied volume (a grid, ~0.1 s for the 53,000-atom CPE-10 box of
    config/paper.yaml) on a stride: at most `max_volume_frames` evenly spaced frames of
    those analysed, so its cost does not grow with the trajectory. The volume of a film barely moves
    (its sd over the frames is 0.2 % of it on the default CPE box), so the strided mean carries the error of a mean of k
    samples that far apart, sem = sd / sqrt(k). `salt`: the salt's atoms (a subset of `electrolyte`), or None.

    Results: ``film_centre_density_g_cm3`` (per frame) and its mean; with `salt`,
    ``film_centre_salt_mass_fraction`` and ``film_centre_polymer_density_g_cm3`` (per frame) and their
    means, and ``salt_mass_fraction`` (the whole electrolyte's); ``volume_frames`` (frame indices),
    ``volume_stride_frames`` (analysed frames between them, mean), ``volume_nm3`` and ``density_g_cm3`` (M_e / V_e) on
    them, ``mean_volume_nm3``, ``sd_volume_nm3``, ``sem_volume_nm3`` (NaN with one volume frame),
    ``mean_density_g_cm3``; ``method`` in words.
    """

    def __init__(self, slab, electrolyte, salt=None, max_volume_frames: int = 10, spacing_nm: float = GRID_SPACING_NM,
                 **kwargs):
        super().__init__(slab.universe.trajectory, **kwargs)
        if len(slab) == 0:
            raise InputError("ElectrolyteVolume slab: empty atom group; a plain box has no slab (use the box volume)")
        if int(max_volume_frames) < 1:
            raise InputError(f"max_volume_frames: {max_volume_frames!r} must be a positive integer")
        if not spacing_nm > 0:
            raise InputError(f"spacing_nm: {spacing_nm!r} must be > 0 nm")
        self.slab = slab
        self.electrolyte = electrolyte
        self.max_volume_frames = int(max_volume_frames)
        self.spacing_nm = float(spacing_nm)
        atoms = slab.universe.atoms
        self._radii = radii_for_elements_nm(_elements(atoms))
        self._is_e = np.zeros(len(atoms), dtype=bool)
        self._is_e[electrolyte.indices] = True
        self._masses = np.asarray(electrolyte.masses, dtype=float)
        self.electrolyte_mass_amu = float(np.sum(self._masses))
        self._salt_masses = None
        if salt is not None:
            outside = np.setdiff1d(salt.indices, electrolyte.indices)
            if len(outside):
                raise InputError(f"ElectrolyteVolume salt: atom(s) {outside[:5].tolist()} are not in the electrolyte group")
            is_salt = np.isin(electrolyte.indices, salt.indices)
            self._salt_masses = np.where(is_salt, self._masses, 0.0)

    def _prepare(self):
        self._rho_c = np.empty(self.n_frames)
        self._w_c = np.full(self.n_frames, np.nan)
        k = min(self.max_volume_frames, self.n_frames)
        self._volume_at = set(np.unique(np.linspace(0, self.n_frames - 1, k).round().astype(int)).tolist())
        self._vol, self._vol_frames = [], []

    def _single_frame(self):
        dims = require_box(self._ts, "electrolyte volume")
        if not np.allclose(dims[3:], 90.0):
            raise InputError(f"electrolyte volume: frame {self._ts.frame} has a triclinic box {dims[3:].tolist()}; "
                             "slab boxes are orthorhombic")
        L = angstrom_to_nm(np.asarray(dims[:3], dtype=np.float64))
        inside, thickness = film_centre_band(angstrom_to_nm(self.electrolyte.positions[:, 2].astype(np.float64)),
                                             angstrom_to_nm(self.slab.positions[:, 2].astype(np.float64)), L[2])
        mass = float(np.sum(self._masses[inside]))
        self._rho_c[self._frame_index] = density_g_per_cm3(mass, L[0] * L[1] * thickness)
        if self._salt_masses is not None and mass > 0:
            self._w_c[self._frame_index] = float(np.sum(self._salt_masses[inside])) / mass
        if self._frame_index in self._volume_at:
            pos = angstrom_to_nm(self.slab.universe.atoms.positions.astype(np.float64))
            self._vol.append(occupied_volume_nm3(pos, L, self._radii, self._is_e, self.spacing_nm))
            self._vol_frames.append(int(self._ts.frame))

    def _conclude(self):
        r = self.results
        vol = np.asarray(self._vol)
        r.film_centre_density_g_cm3 = self._rho_c.copy()
        r.mean_film_centre_density_g_cm3 = float(self._rho_c.mean())
        if self._salt_masses is not None:
            r.salt_mass_fraction = float(np.sum(self._salt_masses)) / self.electrolyte_mass_amu
            r.film_centre_salt_mass_fraction = self._w_c.copy()
            r.mean_film_centre_salt_mass_fraction = float(np.nanmean(self._w_c))
            r.film_centre_polymer_density_g_cm3 = (1.0 - np.nan_to_num(self._w_c)) * self._rho_c
            r.mean_film_centre_polymer_density_g_cm3 = float(r.film_centre_polymer_density_g_cm3.mean())
        r.volume_frames = list(self._vol_frames)
        r.volume_nm3 = vol
        r.mean_volume_nm3 = float(vol.mean())
        r.sd_volume_nm3 = float(vol.std(ddof=1)) if len(vol) > 1 else 0.0
        r.sem_volume_nm3 = r.sd_volume_nm3 / np.sqrt(len(vol)) if len(vol) > 1 else float("nan")
        r.volume_stride_frames = float(np.mean(np.diff(sorted(self._volume_at)))) if len(vol) > 1 else None
        r.density_g_cm3 = np.array([density_g_per_cm3(self.electrolyte_mass_amu, v) for v in vol])
        r.mean_density_g_cm3 = float(r.density_g_cm3.mean())
        r.method = (f"occupied volume: power-diagram cells of the electrolyte atoms within {REACH_NM:g} nm, "
                    f"{self.spacing_nm:g} nm grid, {len(vol)} frames; film-centre density: atoms more than "
                    f"{FILM_CENTRE_CLEARANCE_NM:g} nm beyond the slab's outermost atom centres, every frame")


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


__all__ = ["SLAB_SELECTION", "POWER_RADIUS_NM", "REACH_NM", "ElectrolyteVolume", "film_gap",
           "film_centre_band", "film_centre_density_g_cm3", "occupied_volume_nm3", "radii_for_elements_nm", "slab_atoms",
           "electrolyte_reference_density", "NATFSI_FORMULA_VOLUME_NM3"]
