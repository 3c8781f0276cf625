"""Helpers shared by the interface analyses (open_sites, interface_profile, speciation, layer_diffusion).

Distance from the face: ``spemd.slab.face_distance_nm`` (signed, both slab faces folded; the faces are
the slab's outermost atom centres, the same faces as the film-centre band's). Errors of a time series
are standard errors of the means of ``N_BLOCKS`` contiguous blocks of frames,

    SEM = sd(block means) / sqrt(n_blocks),

which stays honest for correlated frames as long as a block is longer than the correlation time.
"""

from __future__ import annotations

import warnings

import numpy as np

from spemd.slab import face_distance_nm
from spemd.units import angstrom_to_nm

from spemd.analysis._common import require_box

#: blocks of frames behind every block error of the interface analyses
N_BLOCKS = 5


def block_mean_sem(series, n_blocks: int = N_BLOCKS):
    """(mean, SEM) over axis 0 of `series` (frames first); SEM NaN with fewer than 2 blocks.

    Frames that are NaN (nothing to count in that frame) are left out of their block's mean."""
    x = np.asarray(series, dtype=float)
    nb = min(n_blocks, len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: their mean is NaN
        mean = np.nanmean(x, axis=0)
        if nb < 2:
            return mean, np.full_like(np.asarray(mean, dtype=float), np.nan)
        blocks = np.array([np.nanmean(b, axis=0) for b in np.array_split(x, nb)])
        n_ok = np.sum(np.isfinite(blocks), axis=0)
        sem = np.nanstd(blocks, axis=0, ddof=1) / np.sqrt(np.maximum(n_ok, 1))
    return mean, np.where(n_ok >= 2, sem, np.nan)


def frame_geometry(ts, slab, label: str):
    """(height_nm, area_nm2, slab_z_nm) of the current frame of an orthorhombic-in-z slab box."""
    dims = require_box(ts, label)
    a, b, c = (float(x) for x in angstrom_to_nm(np.asarray(dims[:3], dtype=float)))
    gamma = np.radians(float(dims[5]))
    area = a * b * np.sin(gamma)  # the x/y cell area; z is the slab normal
    return c, area, angstrom_to_nm(slab.positions[:, 2].astype(float))


def face_distances(group, slab_z_nm, height_nm):
    """Signed face distance (nm) of every atom of `group` in the current frame."""
    return face_distance_nm(angstrom_to_nm(group.positions[:, 2].astype(float)), slab_z_nm, height_nm)
