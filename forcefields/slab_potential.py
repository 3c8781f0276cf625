"""Electrostatic potential and field of point charges periodic in x and y (a slab), open in z.

Used to ask whether the surface binding of TFSI- away from the open metal (docs/calibration.md, "Surface
background and charge sets") is the near field of the slab's discrete charges or an artefact.

For charges q_j at (rho_j, z_j) repeated on the lattice of an Lx x Ly cell (area A), the potential of a
unit test charge at (rho, z) splits exactly into its x,y average and the rest (2-D Fourier series, the
G = 0 term of the 2-D Ewald sum taken analytically; k_e = 1/(4 pi eps0)):

    phi(rho, z) = phibar(z) + (2 pi k_e / A) sum_{G != 0} (1/|G|) sum_j q_j cos(G.(rho - rho_j)) exp(-|G| |z - z_j|)
    phibar(z)   = -(2 pi k_e / A) sum_j q_j |z - z_j|

with G = 2 pi (m/Lx, n/Ly). phibar is the potential of the charges smeared into sheets: for a neutral
cell it is flat outside the charges, +-(2 pi k_e / A) M_z above/below (M_z = sum q_j z_j, the cell's z
dipole; its step across the slab is M_z / (eps0 A)), so the averaged field outside a neutral,
dipole-free slab is exactly zero at any distance. Everything a molecule next to it feels comes from the
lateral terms, which decay as exp(-|G| d): the corrugation of the potential set by the surface's own
charge pattern. The field is E = -grad phi, term by term.

Preconditions: orthorhombic cell in x, y; every evaluation height at least `min_gap_nm` from every
charge plane (the series converges as exp(-|G|_max d); `G_max` is chosen for 1e-10 relative
truncation at the smallest gap). Units: nm, e; potentials in kJ/mol per e (divide by
spemd.units.KJ_PER_MOL_PER_EV for volts), fields in kJ/mol/nm per e.
"""

from __future__ import annotations

import math

import numpy as np

from spemd.units import AVOGADRO, ELEMENTARY_CHARGE_C, M_PER_NM

VACUUM_PERMITTIVITY_F_PER_M = 8.8541878128e-12  # CODATA 2018
#: 1/(4 pi eps0) in kJ/mol nm e^-2 (= 138.935...; OpenMM's ONE_4PI_EPS0)
COULOMB_KJ_NM_PER_MOL_E2 = ELEMENTARY_CHARGE_C**2 / (4 * math.pi * VACUUM_PERMITTIVITY_F_PER_M * M_PER_NM) * AVOGADRO / 1000.0
#: relative truncation of the lateral series at the smallest gap
SERIES_TOLERANCE = 1e-10


def averaged_potential(z_nm, charges_e, positions_nm, box_xy_nm) -> np.ndarray:
    """phibar(z) (kJ/mol/e): the x,y-averaged potential at each height of `z_nm` (module doc)."""
    z = np.atleast_1d(np.asarray(z_nm, dtype=float))
    q = np.asarray(charges_e, dtype=float)
    zj = np.asarray(positions_nm, dtype=float)[:, 2]
    area = float(box_xy_nm[0]) * float(box_xy_nm[1])
    return -(2 * math.pi * COULOMB_KJ_NM_PER_MOL_E2 / area) * (np.abs(z[:, None] - zj[None, :]) * q).sum(axis=1)


def averaged_field(z_nm, charges_e, positions_nm, box_xy_nm) -> np.ndarray:
    """-d phibar/dz (kJ/mol/nm/e) at each height: the field of the charge sheets."""
    z = np.atleast_1d(np.asarray(z_nm, dtype=float))
    q = np.asarray(charges_e, dtype=float)
    zj = np.asarray(positions_nm, dtype=float)[:, 2]
    area = float(box_xy_nm[0]) * float(box_xy_nm[1])
    return (2 * math.pi * COULOMB_KJ_NM_PER_MOL_E2 / area) * (np.sign(z[:, None] - zj[None, :]) * q).sum(axis=1)


def potential_grid(z_nm: float, charges_e, positions_nm, box_xy_nm, n_grid: int = 64, min_gap_nm: float = 0.05) -> dict:
    """phi and E on an n_grid x n_grid lattice of x, y (x_k = k Lx / n_grid) at height `z_nm` (module doc).

    Returns {"x_nm", "y_nm" (1-D axes), "phi" (n, n) total potential, "phibar", "phi_lateral" (n, n),
    "field" (3, n, n) total field E_x, E_y, E_z}; [i, k] is (x_i, y_k). The lateral series is summed by an
    inverse FFT, |m|, |n| < n_grid / 2; a ValueError if that leaves more than SERIES_TOLERANCE relative
    truncation at the smallest gap, or a gap is below min_gap_nm.
    """
    q = np.asarray(charges_e, dtype=float)
    pos = np.asarray(positions_nm, dtype=float)
    lx, ly = float(box_xy_nm[0]), float(box_xy_nm[1])
    gap = np.abs(float(z_nm) - pos[:, 2])
    if gap.min() < min_gap_nm:
        raise ValueError(f"z_nm: {z_nm} is {gap.min():.3g} nm from a charge plane (< {min_gap_nm} nm)")
    half = n_grid // 2 - 1
    g_max = 2 * math.pi * half / max(lx, ly)
    if math.exp(-g_max * gap.min()) > SERIES_TOLERANCE:
        raise ValueError(f"n_grid: {n_grid} truncates the series at {math.exp(-g_max * gap.min()):.1e} (gap {gap.min():.3f} nm); use more points")
    m = np.arange(-half, half + 1)
    gx = 2 * math.pi * m / lx
    gy = 2 * math.pi * m / ly
    gxx, gyy = np.meshgrid(gx, gy, indexing="ij")
    g = np.hypot(gxx, gyy)
    g[half, half] = 1.0  # G = 0 is phibar, handled analytically
    # coefficients c(G) = (2 pi k_e / A) / |G| sum_j q_j exp(-|G| |z - z_j|) exp(-i G.rho_j), and the z derivative's
    pref = 2 * math.pi * COULOMB_KJ_NM_PER_MOL_E2 / (lx * ly)
    coef = np.zeros(g.shape, dtype=complex)
    coef_z = np.zeros(g.shape, dtype=complex)
    dz = float(z_nm) - pos[:, 2]
    for j in range(len(q)):
        phase = np.exp(-1j * (gxx * pos[j, 0] + gyy * pos[j, 1])) * np.exp(-g * abs(dz[j])) * q[j]
        coef += phase
        coef_z += phase * np.sign(dz[j])
    coef *= pref / g
    coef_z *= pref  # E_z = -d/dz: (1/|G|) * |G| sign(z - z_j)
    coef[half, half] = coef_z[half, half] = 0.0
    # place on the FFT grid: value(x_i, y_k) = sum_mn c_mn exp(+i 2 pi (m i + n k) / n_grid)
    def synth(c):
        full = np.zeros((n_grid, n_grid), dtype=complex)
        full[np.ix_(m % n_grid, m % n_grid)] = c
        return np.fft.ifft2(full).real * n_grid * n_grid

    lateral = synth(coef)
    field = np.stack([synth(-1j * gxx * coef), synth(-1j * gyy * coef), synth(coef_z)])
    phibar = float(averaged_potential([z_nm], q, pos, (lx, ly))[0])
    field[2] += float(averaged_field([z_nm], q, pos, (lx, ly))[0])
    return {
        "x_nm": np.arange(n_grid) * lx / n_grid,
        "y_nm": np.arange(n_grid) * ly / n_grid,
        "phi": lateral + phibar,
        "phibar": phibar,
        "phi_lateral": lateral,
        "field": field,
    }
