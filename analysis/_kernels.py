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


@numba.njit(cache=True, nogil=True)
def power_owned_points(pos, radii, is_e, box, n_grid, reach):
    """Number of grid points whose power-diagram owner is an electrolyte atom within `reach` of them
    (analysis/volume.py's occupied volume, in the units of `pos`, `radii`, `box`).

    Grid point (i, j, k) of an orthorhombic periodic box sits at ((i + 1/2) L_x / n_x, ...). Each atom
    stamps the points within rho = sqrt(reach^2 + R_max^2 - R_min^2) of it, keeping per point the
    least power |x - x_a|^2 - R_a^2 and its atom. This is exact: an atom beyond rho has a power above
    rho^2 - R_max^2 = reach^2 - R_min^2, which no owner within reach exceeds, so a point whose true owner
    lies beyond rho is not counted either way. `pos` folded into [0, L)."""
    nx, ny, nz = n_grid[0], n_grid[1], n_grid[2]
    hx, hy, hz = box[0] / nx, box[1] / ny, box[2] / nz
    r_min, r_max = radii.min(), radii.max()
    rho = np.sqrt(reach * reach + r_max * r_max - r_min * r_min)
    best = np.full(nx * ny * nz, np.inf)
    owner = np.full(nx * ny * nz, -1, dtype=np.int64)
    dist2 = np.empty(nx * ny * nz)
    rho2 = rho * rho
    kms = np.empty(nz, dtype=np.int64)
    dz2s = np.empty(nz)
    for a in range(pos.shape[0]):
        px, py, pz = pos[a, 0], pos[a, 1], pos[a, 2]
        r2a = radii[a] * radii[a]
        xlo, xhi = int(np.ceil((px - rho) / hx - 0.5)), int(np.floor((px + rho) / hx - 0.5))
        ylo, yhi = int(np.ceil((py - rho) / hy - 0.5)), int(np.floor((py + rho) / hy - 0.5))
        zlo, zhi = int(np.ceil((pz - rho) / hz - 0.5)), int(np.floor((pz + rho) / hz - 0.5))
        if xhi - xlo + 1 > nx:  # the sphere spans the box: every plane once, by minimum image
            xlo, xhi = 0, nx - 1
        if yhi - ylo + 1 > ny:
            ylo, yhi = 0, ny - 1
        if zhi - zlo + 1 > nz:
            zlo, zhi = 0, nz - 1
        nzr = zhi - zlo + 1
        for k in range(nzr):  # the z offsets once per atom, not per (x, y) row
            km = (zlo + k) % nz
            dz = (km + 0.5) * hz - pz
            dz -= box[2] * np.floor(dz / box[2] + 0.5)
            kms[k] = km
            dz2s[k] = dz * dz
        for i in range(xlo, xhi + 1):
            im = i % nx
            dx = (im + 0.5) * hx - px
            dx -= box[0] * np.floor(dx / box[0] + 0.5)
            for j in range(ylo, yhi + 1):
                jm = j % ny
                dy = (jm + 0.5) * hy - py
                dy -= box[1] * np.floor(dy / box[1] + 0.5)
                dxy = dx * dx + dy * dy
                if dxy > rho2:
                    continue
                row = (im * ny + jm) * nz
                for k in range(nzr):
                    d2 = dxy + dz2s[k]
                    if d2 > rho2:
                        continue
                    p = d2 - r2a
                    g = row + kms[k]
                    if p < best[g]:
                        best[g] = p
                        owner[g] = a
                        dist2[g] = d2
    reach2 = reach * reach
    count = 0
    for g in range(best.shape[0]):
        a = owner[g]
        if a >= 0 and is_e[a] and dist2[g] <= reach2:
            count += 1
    return count
