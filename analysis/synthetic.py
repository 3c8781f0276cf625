"""Synthetic Universes with known answers, for tests, validation and the benchmark.

All builders return an in-memory MDAnalysis Universe (``Universe.empty`` + ``MemoryReader``) with
lengths in nm on the way in (converted to MDAnalysis' Angstrom with spemd.units) and a frame
interval ``dt_ps``. Everything is deterministic for a given seed.

- :func:`brownian_universe`: independent Brownian particles, MSD(t) = 2 d D t exactly in expectation
  (Gaussian steps of variance 2 D dt per component), optionally wrapped into the box.
- :func:`ballistic_universe`: x(t) = x0 + v t with |v_i| = 1 nm/ps per component: MSD(t) = d t^2.
- :func:`uniform_universe`: uncorrelated uniform points: g(r) = 1 (ideal gas).
- :func:`fcc_universe`: an FCC lattice: shells at a/sqrt(2) (12), a (6), a sqrt(3/2) (24), ...
- :func:`bound_ligand_universe`: n_a centres (resname A), each holding k B atoms at a fixed distance, and
  n_free further B atoms uniform in the box, new positions each frame: beyond the bound shell the B
  density around a centre is (N_B - k)/V exactly, so the tail of g is (N_B - k)/N_B and the
  finite-size corrected tail is 1 (Ganguly & van der Vegt 2013).
"""

from __future__ import annotations

import numpy as np

from spemd.units import nm_to_angstrom


def _universe(n_atoms, coords_nm, box_nm, dt_ps, resnames=None, names=None, resids=None, masses=None):
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    n_res = n_atoms if resids is None else int(np.max(resids)) + 1
    atom_resindex = np.arange(n_atoms) if resids is None else np.asarray(resids)
    u = mda.Universe.empty(n_atoms, n_residues=n_res, atom_resindex=atom_resindex, trajectory=False)
    u.add_TopologyAttr("names", list(names) if names is not None else ["X"] * n_atoms)
    u.add_TopologyAttr("resnames", list(resnames) if resnames is not None else ["X"] * n_res)
    u.add_TopologyAttr("resids", np.arange(1, n_res + 1))
    u.add_TopologyAttr("masses", np.ones(n_atoms) if masses is None else np.asarray(masses, float))
    coords = np.asarray(nm_to_angstrom(np.asarray(coords_nm, dtype=np.float64)), dtype=np.float32)
    box = np.asarray(box_nm, dtype=float)
    if box.ndim == 1:
        dims = np.r_[nm_to_angstrom(box), 90.0, 90.0, 90.0]
        dims = np.tile(dims, (coords.shape[0], 1))
    else:  # per-frame edges (NPT)
        dims = np.c_[nm_to_angstrom(box), np.full((len(box), 3), 90.0)]
    u.load_new(coords, format=MemoryReader, dimensions=dims.astype(np.float32), dt=dt_ps)
    return u


def brownian_positions(n_particles, n_frames, D_nm2_per_ps, dt_ps, box_nm, seed=0, dim=3):
    """Unwrapped Brownian trajectories (T, P, 3) in nm; only the first `dim` components move."""
    rng = np.random.default_rng(seed)
    box = np.asarray(box_nm, dtype=float)
    x0 = rng.random((n_particles, 3)) * box
    steps = rng.normal(0.0, np.sqrt(2 * D_nm2_per_ps * dt_ps), size=(n_frames, n_particles, 3))
    steps[0] = 0.0
    steps[:, :, dim:] = 0.0
    return x0 + np.cumsum(steps, axis=0)


def brownian_universe(n_particles=100, n_frames=200, D_nm2_per_ps=1e-3, dt_ps=1.0, box_nm=(4.0, 4.0, 4.0),
                      seed=0, wrap=True):
    pos = brownian_positions(n_particles, n_frames, D_nm2_per_ps, dt_ps, box_nm, seed)
    if wrap:
        pos = np.mod(pos, np.asarray(box_nm, dtype=float))
    return _universe(n_particles, pos, box_nm, dt_ps)


def ballistic_universe(n_particles=10, n_frames=50, dt_ps=0.01, box_nm=(10.0, 10.0, 10.0), seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.random((n_particles, 3)) * np.asarray(box_nm)
    v = rng.choice([-1.0, 1.0], size=(n_particles, 3))
    t = np.arange(n_frames) * dt_ps
    pos = x0[None] + t[:, None, None] * v[None]
    return _universe(n_particles, pos, box_nm, dt_ps)


def uniform_universe(n_a=200, n_b=400, n_frames=20, box_nm=(3.0, 3.0, 3.0), seed=0):
    """Two groups of uniform random points (resnames A then B), new positions each frame."""
    rng = np.random.default_rng(seed)
    n = n_a + n_b
    pos = rng.random((n_frames, n, 3)) * np.asarray(box_nm, dtype=float)
    return _universe(n, pos, box_nm, 1.0, resnames=["A"] * n_a + ["B"] * n_b, names=["A"] * n_a + ["B"] * n_b)


def bound_ligand_universe(n_a=10, k=3, n_free=10, bond_nm=0.2, n_frames=400, box_nm=(3.0, 3.0, 3.0), seed=0):
    """Centres (resname A) with `k` bound B atoms each at `bond_nm` in random directions, plus `n_free`
    uniform B atoms (resname B for all B atoms); every atom its own residue; independent frames."""
    rng = np.random.default_rng(seed)
    box = np.asarray(box_nm, dtype=float)
    centres = rng.random((n_frames, n_a, 1, 3)) * box
    u = rng.normal(size=(n_frames, n_a, k, 3))
    bound = centres + bond_nm * u / np.linalg.norm(u, axis=-1, keepdims=True)
    free = rng.random((n_frames, n_free, 3)) * box
    pos = np.concatenate([centres[:, :, 0], bound.reshape(n_frames, n_a * k, 3), free], axis=1)
    n_b = n_a * k + n_free
    return _universe(n_a + n_b, np.mod(pos, box), box, 1.0, resnames=["A"] * n_a + ["B"] * n_b,
                     names=["A"] * n_a + ["B"] * n_b)


def fcc_universe(a_nm=0.4, cells=4, n_frames=2, jitter_nm=0.0, seed=0):
    """FCC lattice of cells^3 conventional cells (4 atoms each), cubic box of cells*a."""
    rng = np.random.default_rng(seed)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array([[i, j, k] for i in range(cells) for j in range(cells) for k in range(cells)], float)
    pos = ((grid[:, None, :] + basis[None]) .reshape(-1, 3)) * a_nm
    n = len(pos)
    frames = np.repeat(pos[None], n_frames, axis=0) + rng.normal(0, jitter_nm, size=(n_frames, n, 3))
    L = cells * a_nm
    return _universe(n, np.mod(frames, L), (L, L, L), 1.0)


def electrolyte_universe(n_pairs=20, n_frames=100, D_cation=2e-3, D_anion=1e-3, dt_ps=1.0, box_nm=(3.0, 3.0, 3.0),
                         seed=0, wrap=True):
    """Na atoms (resname NA) and rigid 3-atom anions (resname TFS, names N1 O1 O2) moving as Brownian
    particles with the given D; returns (universe, cation centres (T,P,3), anion centres (T,P,3)) in nm."""
    rng = np.random.default_rng(seed)
    box = np.asarray(box_nm, dtype=float)
    cat = brownian_positions(n_pairs, n_frames, D_cation, dt_ps, box, seed=rng.integers(1 << 31))
    an = brownian_positions(n_pairs, n_frames, D_anion, dt_ps, box, seed=rng.integers(1 << 31))
    offsets = np.array([[0.0, 0.0, 0.0], [0.12, 0.0, 0.0], [-0.12, 0.0, 0.0]])
    # equal masses: centre of mass of the anion = its N atom (offsets are symmetric)
    an_atoms = (an[:, :, None, :] + offsets[None, None]).reshape(n_frames, 3 * n_pairs, 3)
    pos = np.concatenate([cat, an_atoms], axis=1)
    if wrap:
        pos = np.mod(pos, box)
    n = n_pairs * 4
    resids = np.r_[np.arange(n_pairs), np.repeat(np.arange(n_pairs, 2 * n_pairs), 3)]
    u = _universe(n, pos, box, dt_ps, resnames=["NA"] * n_pairs + ["TFS"] * n_pairs,
                  names=["NA"] * n_pairs + ["N1", "O1", "O2"] * n_pairs, resids=resids)
    return u, cat, an


def caged_positions(n_particles, n_frames, D_nm2_per_ps, cage_nm, tau_ps, dt_ps, seed=0):
    """Particles in harmonic cages whose centres random-walk: x = c + y, c Brownian with D, y an
    Ornstein-Uhlenbeck process (per-component variance cage_nm^2, relaxation time tau_ps), independent.
    MSD(t) = 6 D t + 6 cage^2 (1 - exp(-t/tau)): subdiffusive at t ~ tau, long-time D exactly D."""
    rng = np.random.default_rng(seed)
    c = brownian_positions(n_particles, n_frames, D_nm2_per_ps, dt_ps, (5.0, 5.0, 5.0), seed=rng.integers(1 << 31))
    phi = np.exp(-dt_ps / tau_ps)
    y = np.empty((n_frames, n_particles, 3))
    y[0] = rng.normal(0.0, cage_nm, size=(n_particles, 3))  # start in the stationary state
    kicks = rng.normal(0.0, cage_nm * np.sqrt(1 - phi**2), size=(n_frames, n_particles, 3))
    for t in range(1, n_frames):
        y[t] = phi * y[t - 1] + kicks[t]
    return c + y


def persistent_positions(n_particles, n_frames, D_nm2_per_ps, phi, dt_ps, seed=0):
    """Random walk with AR(1)-correlated steps v_t = phi v_{t-1} + e_t (correlated noise). Per component
    the long-time D = s^2 / (2 dt (1 - phi)^2) for innovation variance s^2; s is chosen so that D is
    `D_nm2_per_ps`. MSD is superdiffusive (phi > 0) or subdiffusive (phi < 0) at short lags."""
    rng = np.random.default_rng(seed)
    s = np.sqrt(2 * D_nm2_per_ps * dt_ps) * (1 - phi)
    e = rng.normal(0.0, s, size=(n_frames, n_particles, 3))
    v = np.empty_like(e)
    v[0] = e[0] / np.sqrt(1 - phi**2)  # stationary start
    for t in range(1, n_frames):
        v[t] = phi * v[t - 1] + e[t]
    x = np.cumsum(v, axis=0)
    return x - x[0]


def fbm_positions(n_particles, n_frames, hurst, step_nm, seed=0):
    """Fractional Brownian motion (T, P, 3) in nm, exact by circulant embedding (Davies & Harte 1987) of the
    fractional Gaussian noise autocovariance r(k) = step^2 (|k+1|^2H - 2|k|^2H + |k-1|^2H) / 2: MSD(t) =
    3 step^2 (t/dt)^(2H) at every lag, a power law (sub-diffusive for H < 1/2) with no diffusive regime."""
    rng = np.random.default_rng(seed)
    k = np.arange(n_frames, dtype=float)
    r = 0.5 * (np.abs(k + 1) ** (2 * hurst) - 2 * k ** (2 * hurst) + np.abs(k - 1) ** (2 * hurst))
    lam = np.maximum(np.fft.fft(np.r_[r, r[-2:0:-1]]).real, 0.0)  # >= 0 for fGn; clip rounding
    m = len(lam)
    z = rng.normal(size=(m, 3 * n_particles)) + 1j * rng.normal(size=(m, 3 * n_particles))
    noise = np.fft.fft(np.sqrt(lam / m)[:, None] * z, axis=0)[:n_frames - 1].real
    x = np.cumsum(step_nm * noise, axis=0).reshape(n_frames - 1, n_particles, 3)
    return np.concatenate([np.zeros((1, n_particles, 3)), x])


def drifting_positions(n_particles, n_frames, D_nm2_per_ps, velocity_nm_per_ps, dt_ps, seed=0):
    """Brownian particles that all move with one constant velocity (3,) besides diffusing:
    MSD(t) = 6 D t + |v|^2 t^2, and the mean position moves by v t."""
    x = brownian_positions(n_particles, n_frames, D_nm2_per_ps, dt_ps, (5.0, 5.0, 5.0), seed=seed)
    t = np.arange(n_frames) * dt_ps
    return x + t[:, None, None] * np.asarray(velocity_nm_per_ps, dtype=float)[None, None, :]
