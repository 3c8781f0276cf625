"""x,y-periodic potential and field (forcefields/slab_potential.py) against a real-space lattice sum."""

import math

import numpy as np
import pytest

from spemd.forcefields import slab_potential as sp

K = sp.COULOMB_KJ_NM_PER_MOL_E2
L = 1.0  # square cell (nm)
# a vertical dipole (M_z = 0.2 e nm per cell) plus a tilted pair that corrugates the potential laterally
Q = np.array([1.0, -1.0, 0.5, -0.5])
POS = np.array([[0.3, 0.4, 0.0], [0.3, 0.4, -0.2], [0.7, 0.2, -0.1], [0.1, 0.9, -0.1]])


def _direct(r, rc):
    """Coulomb sum over the image cells within rc of r (in x, y), plus the continuum tail of the cells'
    z dipole and in-plane-averaged quadrupole beyond rc (a second way, independent of the Fourier series)."""
    n = int(rc / L) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    lattice = np.stack([i.ravel() * L, j.ravel() * L, np.zeros(i.size)], axis=1)
    lattice = lattice[np.hypot(lattice[:, 0] - r[0], lattice[:, 1] - r[1]) < rc]
    phi = sum(K * q * (1.0 / np.linalg.norm(r - (p + lattice), axis=1)).sum() for q, p in zip(Q, POS))
    m_z = (Q * POS[:, 2]).sum()
    phi += 2 * math.pi * K * m_z * r[2] / (L**2 * math.sqrt(rc**2 + r[2] ** 2))
    phi += math.pi * K / (L**2 * rc) * (Q * (0.5 * (POS[:, 0] ** 2 + POS[:, 1] ** 2) - POS[:, 2] ** 2)).sum()
    return phi


def test_averaged_potential_is_the_sheet_dipole_and_flat_outside():
    m_z = (Q * POS[:, 2]).sum()
    above = sp.averaged_potential([0.3, 1.0, 5.0], Q, POS, (L, L))
    below = sp.averaged_potential([-0.5, -4.0], Q, POS, (L, L))
    assert np.allclose(above, 2 * math.pi * K * m_z / L**2, rtol=1e-12)
    assert np.allclose(below, -2 * math.pi * K * m_z / L**2, rtol=1e-12)
    # step across the slab = M_z / (eps0 A) = 4 pi k_e M_z / A; no averaged field outside a neutral cell
    assert above[0] - below[0] == pytest.approx(4 * math.pi * K * m_z, rel=1e-12)
    assert np.allclose(sp.averaged_field([0.3, 2.0, -3.0], Q, POS, (L, L)), 0.0, atol=1e-9)
    assert K == pytest.approx(138.935457, rel=1e-8)


@pytest.mark.parametrize("z", [0.3, 0.6])
def test_potential_matches_the_real_space_lattice_sum(z):
    grid = sp.potential_grid(z, Q, POS, (L, L), n_grid=64)
    assert grid["phi_lateral"].std() > 1.0  # the case is corrugated (kJ/mol/e)
    for ix, iy in ((0, 0), (19, 40), (33, 7)):
        r = np.array([grid["x_nm"][ix], grid["y_nm"][iy], z])
        direct = np.mean([_direct(r, 200.0 + s) for s in np.linspace(0.0, 1.0, 8, endpoint=False)])
        assert grid["phi"][ix, iy] == pytest.approx(direct, abs=2e-3)


def test_field_is_minus_the_gradient():
    z, h = 0.4, 1e-4
    grid = sp.potential_grid(z, Q, POS, (L, L), n_grid=64)
    up, down = (sp.potential_grid(z + s, Q, POS, (L, L), n_grid=64)["phi"] for s in (h, -h))
    assert np.allclose(grid["field"][2], -(up - down) / (2 * h), atol=1e-4 * np.abs(grid["field"][2]).max())
    # moving every charge by -h in x is moving the grid by +h
    right, left = (sp.potential_grid(z, Q, POS - [s, 0, 0], (L, L), n_grid=64)["phi"] for s in (h, -h))
    assert np.allclose(grid["field"][0], -(right - left) / (2 * h), atol=1e-4 * np.abs(grid["field"][0]).max())
    assert np.abs(grid["field"][0]).max() > 10.0


def test_heights_too_close_or_too_coarse_are_refused():
    with pytest.raises(ValueError, match="z_nm: 0.01 is 0.01 nm from a charge plane"):
        sp.potential_grid(0.01, Q, POS, (L, L))
    with pytest.raises(ValueError, match="n_grid: 8 truncates the series"):
        sp.potential_grid(0.1, Q, POS, (L, L), n_grid=8)
