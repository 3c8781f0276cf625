"""What the builders, the force field and the analysis must agree on about the MOF slab (they may not
import one another): its residue names (the topology contract, docs/contracts.md) and the atomic radii
that define its z-extent (the region the builder fills) and, with the Na+ radius, the power diagram of
the analysis's occupied volume, and the film-centre band both the builder (its target) and the analysis
(its density) measure."""

import numpy as np

from spemd.errors import InputError
from spemd.units import density_g_per_cm3

#: the slab's residues: BTC linkers, FMT formate surface caps (systems/mof.py), one-atom metal residues
MOF_RESIDUES = ("BTC", "FMT", "FE", "NI", "CU")

#: van der Waals radii (nm). H, C, N, O, F, S, Ni, Cu: Bondi, J. Phys. Chem. 68, 441 (1964), Table I.
#: Fe is not in Bondi's table; Ni's radius (the neighbouring element, same paddlewheel site) is used.
VDW_RADIUS_NM = {"H": 0.120, "C": 0.170, "N": 0.155, "O": 0.152, "F": 0.147, "S": 0.180,
                 "NI": 0.163, "FE": 0.163, "CU": 0.140}

#: The film-centre band of a slab box (spemd.analysis.volume) starts this far (nm) from the slab's
#: outermost atom centres: the first adsorbed layer (centres within ~0.5 nm of the face on the default
#: CPE box) and the pore mouths stay outside it, so the band holds the film's bulk.
FILM_CENTRE_CLEARANCE_NM = 0.6

#: A paddlewheel metal's axial (open) site lies on the M-M axis, away from its partner, this far (nm) from
#: the metal; the metal is a surface open site when that point is within EXPOSED_FACE_NM of a slab face
#: (the slab's outermost atom centres) or beyond it (systems/mof.py builds, analysis/open_sites.py measures).
AXIAL_SITE_NM = 0.22
EXPOSED_FACE_NM = 0.3


def film_gap(slab_z_nm, height_nm: float) -> tuple[float, float]:
    """(z_lo, z_hi), z_hi > z_lo: the largest gap between slab atom centres on the periodic z axis, the film.

    z_hi may exceed `height_nm` when the film crosses the periodic boundary.
    """
    z = np.sort(np.mod(np.asarray(slab_z_nm, dtype=float), height_nm))
    if not len(z):
        raise InputError("film gap: no slab atoms")
    gaps = np.diff(np.r_[z, z[0] + height_nm])
    k = int(np.argmax(gaps))
    return float(z[k]), float(z[k] + gaps[k])


def film_centre_band(electrolyte_z_nm, slab_z_nm, height_nm: float,
                     clearance_nm: float = FILM_CENTRE_CLEARANCE_NM) -> tuple[np.ndarray, float]:
    """(inside, thickness_nm): which electrolyte atoms lie in the film-centre band, and the band's thickness.

    InputError when the film has no centre band."""
    lo, hi = film_gap(slab_z_nm, height_nm)
    band_lo, band_hi = lo + clearance_nm, hi - clearance_nm
    if not band_hi - band_lo > 0:
        raise InputError(f"film-centre density: the film between the slab faces is {hi - lo:.4g} nm thick, not "
                         f"more than twice the clearance of {clearance_nm:g} nm (spemd.slab.FILM_CENTRE_CLEARANCE_NM); "
                         "build a box with more electrolyte above the slab")
    z = np.mod(np.asarray(electrolyte_z_nm, dtype=float) - band_lo, height_nm)  # band is [0, band_hi - band_lo)
    return z < band_hi - band_lo, band_hi - band_lo


def film_centre_density_g_cm3(electrolyte_z_nm, electrolyte_mass_amu, slab_z_nm, area_nm2: float,
                              height_nm: float, clearance_nm: float = FILM_CENTRE_CLEARANCE_NM) -> float:
    """Film-centre density of one frame (spemd.analysis.volume's docstring); InputError when the film has no centre band."""
    inside, thickness = film_centre_band(electrolyte_z_nm, slab_z_nm, height_nm, clearance_nm)
    mass = float(np.sum(np.asarray(electrolyte_mass_amu, dtype=float)[inside]))
    return density_g_per_cm3(mass, area_nm2 * thickness)


def face_distance_nm(z_nm, slab_z_nm, height_nm: float) -> np.ndarray:
    """Signed distance (nm) of each z from the nearer slab face, both faces folded onto one axis.

    The faces are the slab's outermost atom centres (:func:`film_gap`). Positive in the film (0 at a face,
    half the film thickness at its centre), negative inside the slab's z-extent (minus the depth below
    the nearer face)."""
    lo, hi = film_gap(slab_z_nm, height_nm)
    z = lo + np.mod(np.asarray(z_nm, dtype=float) - lo, height_nm)  # z in [lo, lo + height)
    in_film = z <= hi
    into_slab = np.minimum(z - hi, lo + height_nm - z)
    return np.where(in_film, np.minimum(z - lo, hi - z), -into_slab)
