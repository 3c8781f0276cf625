"""Compiled inner loops (numba) of the analyses, where the profiles of issue 30 put the time.

:func:`pairs_within_ortho`: every A-B pair closer than r_max in an orthorhombic periodic box, with
the minimum-image distance

    d_ab = |dx - L round(dx / L)|,  dx = x_b - x_a per axis,

in float64 from the float32 coordinates, each folded into [0, L) first (so |dx| < L: one shift),

the pair search of analysis/rdf.py's ``"all_pairs"`` kernel. For a few hundred ions against a few
thousand partners the search is over N_A N_B pairs anyway (a large part of them lies within r_max),
and one loop over them writes the pairs directly: ~5x faster than a periodic KD-tree or
MDAnalysis' ``capped_distance`` on the benchmark of benchmarks/analysis_speed.py. Compiled on first
use and cached on disk (``cache=True``), so a process pays the compilation once per installation.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _wrap(x, length):
    """x folded into [0, length) (float64)."""
    y = np.float64(x) - length * np.floor(np.float64(x) / length)
    return 0.0 if y >= length else y


@numba.njit(cache=True, nogil=True)
def pairs_within_ortho(pa, pb, box, r_max, out_i, out_j, out_d):
    """Fill out_i/out_j/out_d with (index in A, index in B, distance) of the pairs with d <= `r_max`
    (the units of `pa`, `pb` and `box`: box lengths of an orthorhombic cell). Returns the number of
    pairs, or -1 when they do not fit in the output arrays (then call again with larger ones).

    Per A atom, a first loop (branch-free, so the compiler vectorises it) computes the squared
    distances to every B atom, a second one keeps those within r_max."""
    n = 0
    cap = out_i.shape[0]
    nb = pb.shape[0]
    lx, ly, lz = np.float64(box[0]), np.float64(box[1]), np.float64(box[2])
    bx, by, bz = np.empty(nb), np.empty(nb), np.empty(nb)  # B folded into the box, one array per axis
    for j in range(nb):
        bx[j], by[j], bz[j] = _wrap(pb[j, 0], lx), _wrap(pb[j, 1], ly), _wrap(pb[j, 2], lz)
    r2 = np.empty(nb)
    r2_max = r_max * r_max * (1.0 + 1e-12)  # a margin: the exact test is on the distance below
    for i in range(pa.shape[0]):
        ax, ay, az = _wrap(pa[i, 0], lx), _wrap(pa[i, 1], ly), _wrap(pa[i, 2], lz)
        for j in range(nb):
            dx = bx[j] - ax  # both in [0, L): the nearest image is dx - L round(dx / L)
            dx -= lx * np.floor(dx / lx + 0.5)
            dy = by[j] - ay
            dy -= ly * np.floor(dy / ly + 0.5)
            dz = bz[j] - az
            dz -= lz * np.floor(dz / lz + 0.5)
            r2[j] = dx * dx + dy * dy + dz * dz
        for j in range(nb):
            if r2[j] <= r2_max:
                d = np.sqrt(r2[j])
                if d <= r_max:
                    if n == cap:
                        return -1
                    out_i[n] = i
                    out_j[n] = j
                    out_d[n] = d
                    n += 1
    return n


@numba.njit(cache=True, nogil=True)
def drop_counted_pairs(cond, w, pairs_a, dz_bins, r_bins):
    """cond[a, c] -= w[j, c] ([c > b] + [c = b] / 2) for every counted pair (a, j = its |dz| bin, b = its
    r bin): the conditional lateral reference of analysis/rdf.py without the pair's own share beyond its
    distance. Touches only the bins from b on (a quarter of them on average), not pairs x bins."""
    nbins = cond.shape[1]
    for p in range(pairs_a.shape[0]):
        a, j, b = pairs_a[p], dz_bins[p], r_bins[p]
        cond[a, b] -= 0.5 * w[j, b]
        for c in range(b + 1, nbins):
            cond[a, c] -= w[j, c]
