import numpy as np
import pytest

from spemd.analysis.layer_diffusion import LayerDiffusion, fit_layer, layer_msd
from spemd.analysis.synthetic import _universe

BOX = (3.0, 3.0, 6.0)  # slab atom centres at z 0..2 nm (resname BTC); film 2..6 nm
SLAB = np.array([(x, y, z) for x in (0.5, 1.5, 2.5) for y in (0.5, 1.5, 2.5) for z in (0.0, 2.0)])


def _walk(rng, F, N, D, z, dt=1.0):
    """2D Brownian walks of N ions at fixed height z, wrapped into the box."""
    steps = rng.normal(0.0, np.sqrt(2 * D * dt), size=(F, N, 2))
    steps[0] = 0.0
    xy = rng.random((N, 2)) * 3.0 + np.cumsum(steps, axis=0)
    return np.concatenate([np.mod(xy, 3.0), np.full((F, N, 1), z)], axis=2)


def _universe_of(ions):
    F, N, _ = ions.shape
    coords = np.concatenate([np.tile(SLAB, (F, 1, 1)), ions], axis=1)
    n = len(SLAB)
    return _universe(n + N, coords, BOX, 1.0, resnames=["BTC"] * n + ["NA"] * N, names=["C1"] * n + ["NA"] * N)


def test_confined_random_walks_recover_their_layer_D():
    rng = np.random.default_rng(7)
    F, N, D_int, D_mid = 200, 300, 0.002, 0.01
    ions = np.concatenate([_walk(rng, F, N, D_int, 2.5), _walk(rng, F, N, D_mid, 4.0)], axis=1)  # d = 0.5, 2.0 nm
    u = _universe_of(ions)
    r = LayerDiffusion(u.select_atoms("resname NA"), u.select_atoms("resname BTC")).run().results
    for name, D in (("interface", D_int), ("centre", D_mid)):
        lay = r.layers[name]
        assert lay["diffusive"] and lay["no_window_reason"] is None
        assert lay["n_ions_mean"] == N
        assert lay["D_nm2_per_ps"] == pytest.approx(D, rel=0.15)  # sampling noise ~5 % at this size
        assert abs(lay["D_nm2_per_ps"] - D) < 4 * lay["D_sem_nm2_per_ps"]
        assert lay["D_sem_nm2_per_ps"] < 0.1 * D
    np.testing.assert_allclose(r.survival["interface"], 1.0)  # nobody leaves: P(t) = 1


def _switching(rng, T=200, N=400, D=(0.001, 0.02), p_switch=0.05):
    """Ions hop between layers 0 and 1 (probability p_switch per frame) and move with the D of their layer."""
    labels = np.zeros((T, N), dtype=np.int8)
    labels[0] = rng.integers(0, 2, N)
    for t in range(1, T):
        flip = rng.random(N) < p_switch
        labels[t] = np.where(flip, 1 - labels[t - 1], labels[t - 1])
    sigma = np.sqrt(2 * np.asarray(D)[labels[:-1]])  # the step t -> t+1 moves with the layer at t
    steps = rng.normal(size=(T - 1, N, 2)) * sigma[:, :, None]
    xy = np.concatenate([np.zeros((1, N, 2)), np.cumsum(steps, axis=0)])
    return xy, labels


def test_survival_conditioning_removes_the_bias_of_layer_changes():
    rng = np.random.default_rng(11)
    xy, labels = _switching(rng)
    lags = np.arange(len(xy), dtype=float)
    msd, n, surv = layer_msd(xy, labels, 0)
    D_cond, _, _, reason = fit_layer(lags, msd, n, surv, 0.1, 20, 0.2, 0.2, max_lag_ps=100.0)
    assert reason is None
    assert D_cond == pytest.approx(0.001, rel=0.05)
    # labelled by the origin's layer, ions that crossed into the fast layer carry its motion back in
    biased = layer_msd(xy, labels, 0, conditioned=False)[0]
    assert biased[40] / (4 * 40.0) > 3 * 0.001
    assert msd[40] / (4 * 40.0) == pytest.approx(0.001, rel=0.1)
    assert surv[20] == pytest.approx(0.95 ** 20, rel=0.1)  # P(k) = (1 - p_switch)^k


def test_no_window_when_ions_do_not_stay():
    rng = np.random.default_rng(2)
    xy, labels = _switching(rng, T=60, N=100, p_switch=0.9)
    msd, n, surv = layer_msd(xy, labels, 0)
    D, window, _, reason = fit_layer(np.arange(len(msd), dtype=float), msd, n, surv, 0.1, 20, 0.2, 0.2)
    assert np.isnan(D) and window is None and "leave the layer" in reason
