import numpy as np
import pytest

from spemd.analysis.conductivity import Conductivity, conductivity_from_positions, einstein_helfand, nernst_einstein
from spemd.analysis.synthetic import brownian_positions, electrolyte_universe
from spemd.errors import ConfigError


def test_nernst_einstein_equals_hand_formula():
    Dp, Dm, n, V, T, s = 2e-3, 1e-3, 50, 125.0, 353.0, 0.8
    out = nernst_einstein(Dp, Dm, n, n, V, T, charge_scale=s, sigma_D_cation=1e-4, sigma_D_anion=1e-4)
    e, kB = 1.602176634e-19, 1.380649e-23
    V_m3 = V * 1e-27
    hand_S_per_m = e**2 / (V_m3 * kB * T) * (n * s**2 * Dp * 1e-6 + n * s**2 * Dm * 1e-6)  # nm2/ps -> m2/s
    assert out["sigma_S_per_cm"] == pytest.approx(hand_S_per_m / 100.0, rel=1e-12)
    assert out["t_plus"] == pytest.approx(Dp / (Dp + Dm))
    assert out["sigma_err_S_per_cm"] == pytest.approx(out["sigma_S_per_cm"] * np.hypot(1e-4, 1e-4) / (Dp + Dm))
    with pytest.raises(ConfigError, match="temperature_K"):
        nernst_einstein(Dp, Dm, n, n, V, -1.0)


def test_einstein_helfand_of_neutral_pairs_is_zero():
    cat = brownian_positions(20, 120, 2e-3, 1.0, (3, 3, 3), seed=1)
    an = cat + 0.3  # every anion moves rigidly with its cation: no net current
    eh = einstein_helfand(cat, an, 1.0, 27.0, 300.0, charge_scale=1.0)
    assert abs(eh["sigma_EH_S_per_cm"]) < 1e-12
    ne = nernst_einstein(2e-3, 2e-3, 20, 20, 27.0, 300.0)
    assert eh["sigma_plus_plus_S_per_cm"] == pytest.approx(-eh["sigma_plus_minus_S_per_cm"], rel=1e-9)
    assert ne["sigma_S_per_cm"] > 0


def test_einstein_helfand_matches_nernst_einstein_for_uncorrelated_ions():
    z, vals = [], []
    hand = nernst_einstein(2e-3, 1e-3, 60, 60, 64.0, 300.0, charge_scale=0.8)["sigma_S_per_cm"]
    # one collective trajectory: the slope's relative error is ~ sqrt(window end / run length), so the
    # window ends at 10 % of the run (the plug-in error of a 100 %-uncertain slope would itself be noise)
    for seed in range(20):
        cat = brownian_positions(60, 2000, 2e-3, 1.0, (4, 4, 4), seed=10 + seed)
        an = brownian_positions(60, 2000, 1e-3, 1.0, (4, 4, 4), seed=500 + seed)
        out = conductivity_from_positions(cat, an, 1.0, 64.0, 300.0, charge_scale=0.8, fit_start_fraction=0.01,
                                          fit_end_fraction=0.1)
        ne, eh = out["nernst_einstein"], out["einstein_helfand"]
        assert ne["sigma_S_per_cm"] == pytest.approx(hand, rel=0.15)
        assert eh["diffusive"] and "Isserlis" in eh["uncertainty_method"]
        z.append((eh["sigma_EH_S_per_cm"] - hand) / eh["sigma_EH_err_S_per_cm"])
        vals.append(eh["sigma_EH_S_per_cm"])
    # unbiased: the mean over seeds agrees with the hand value within its standard error
    assert abs(np.mean(vals) - hand) < 3 * np.std(vals, ddof=1) / np.sqrt(len(vals))
    # the stated per-run error is honest: ~2/3 within 1 sigma, nearly all within 3
    z = np.abs(z)
    assert 0.6 <= np.mean(z < 1) <= 0.8, np.mean(z < 1)
    assert np.mean(z < 3) >= 0.9
    # the stated error is the scatter over seeds (a single collective trajectory), not the small NE error
    assert np.std(vals, ddof=1) == pytest.approx(eh["sigma_EH_err_S_per_cm"], rel=0.4)
    assert eh["sigma_EH_err_S_per_cm"] > 2 * ne["sigma_err_S_per_cm"]


def test_cross_terms_and_collective_t_plus_with_known_answers():
    # each anion rides on its cation plus its own walk w: M_total = -q sum w, so sigma_EH is the NE value of
    # D- = D_w alone, sigma_+- = -sigma_++ and t+_collective = 0 exactly in expectation
    Dc, Dw, n, V, T, q = 2e-3, 1e-3, 80, 64.0, 300.0, 0.8
    s_eh_true = nernst_einstein(0.0, Dw, n, n, V, T, charge_scale=q)["sigma_S_per_cm"]
    s_pp_true = nernst_einstein(Dc, 0.0, n, n, V, T, charge_scale=q)["sigma_S_per_cm"]
    zs, zt, zpm = [], [], []
    for seed in range(20):
        cat = brownian_positions(n, 2000, Dc, 1.0, (4, 4, 4), seed=seed)
        an = cat + brownian_positions(n, 2000, Dw, 1.0, (4, 4, 4), seed=1000 + seed)
        eh = einstein_helfand(cat, an, 1.0, V, T, charge_scale=q, fit_start_fraction=0.01, fit_end_fraction=0.1)
        zs.append((eh["sigma_EH_S_per_cm"] - s_eh_true) / eh["sigma_EH_err_S_per_cm"])
        zt.append(eh["t_plus_collective"] / eh["t_plus_collective_err"])
        zpm.append((eh["sigma_plus_minus_S_per_cm"] + s_pp_true) / eh["sigma_plus_minus_err_S_per_cm"])
    for z in (zs, zt, zpm):
        z = np.abs(z)
        assert np.mean(z < 3) >= 0.9 and 0.55 <= np.mean(z < 1) <= 0.85, np.mean(z < 1)


def test_haven_ratio_carries_an_error():
    cat = brownian_positions(60, 2000, 2e-3, 1.0, (4, 4, 4), seed=3)
    an = brownian_positions(60, 2000, 1e-3, 1.0, (4, 4, 4), seed=4)
    out = conductivity_from_positions(cat, an, 1.0, 64.0, 300.0, fit_start_fraction=0.01, fit_end_fraction=0.1)
    h, e = out["haven_ratio"], out["haven_ratio_err"]
    assert np.isfinite(h) and 0.05 < e / h < 2 and abs(h - 1) < 3 * e


def test_no_diffusive_window_propagates_nan_with_reason():
    t = np.arange(200, dtype=float)[:, None, None]
    cat = brownian_positions(30, 200, 2e-3, 1.0, (4, 4, 4), seed=1)
    an = np.ones((1, 30, 3)) * t * 0.01 + np.zeros((200, 30, 3))  # ballistic anions: beta = 2
    eh = einstein_helfand(cat, an, 1.0, 64.0, 300.0)
    assert not eh["diffusive"] and np.isnan(eh["sigma_EH_S_per_cm"]) and "anions" in eh["no_window_reason"]


def test_conductivity_class_on_wrapped_universe_equals_position_route():
    u, cat, an = electrolyte_universe(n_pairs=60, n_frames=300, seed=3, wrap=True)
    c = Conductivity(u.select_atoms("resname NA"), u.select_atoms("resname TFS"), charge_scale=0.75,
                     temperature_K=330.0).run().results
    ref = conductivity_from_positions(cat, an, 1.0, 27.0, 330.0, charge_scale=0.75)
    assert c.nernst_einstein["sigma_S_per_cm"] == pytest.approx(ref["nernst_einstein"]["sigma_S_per_cm"], rel=1e-4)
    assert c.einstein_helfand["sigma_EH_S_per_cm"] == pytest.approx(ref["einstein_helfand"]["sigma_EH_S_per_cm"],
                                                                    rel=1e-3)
    assert c.nernst_einstein["charge_scale"] == 0.75
    assert 0 < c.nernst_einstein["t_plus"] < 1


def test_self_and_collective_msd_covariance_matches_simulation():
    # Cov(MSD_self(n), MSD_M(m)), M = sum of P independent walkers: d C_1(n, m) (ne_eh_covariance's kernel)
    from spemd.analysis.msd import msd_fft
    from spemd.analysis.msd_fit import _pair_covariance

    N, n, m, D, P = 100, 10, 25, 1.0, 3
    x = np.cumsum(np.random.default_rng(1).normal(0, np.sqrt(2 * D), size=(3000, N, P, 3)), axis=1)
    self_msd = np.array([msd_fft(xi)[n] for xi in x])
    coll_msd = np.array([msd_fft(xi.sum(axis=1)[:, None, :])[m] for xi in x])
    pred = 3 * _pair_covariance(2 * D * np.arange(N, dtype=float), n, m, N)
    assert np.cov(self_msd, coll_msd)[0, 1] == pytest.approx(pred, rel=0.12)


def test_haven_error_uses_the_ne_eh_covariance():
    cat = brownian_positions(3, 500, 2e-3, 1.0, (4, 4, 4), seed=11)
    an = brownian_positions(3, 500, 2e-3, 1.0, (4, 4, 4), seed=5001)
    out = conductivity_from_positions(cat, an, 1.0, 64.0, 300.0, fit_start_fraction=0.02, fit_end_fraction=0.2)
    ne, eh, h = out["nernst_einstein"], out["einstein_helfand"], out["haven_ratio"]
    a, b = ne["sigma_err_S_per_cm"] / ne["sigma_S_per_cm"], eh["sigma_EH_err_S_per_cm"] / eh["sigma_EH_S_per_cm"]
    cov = out["ne_eh_covariance"]
    corr = cov / (ne["sigma_err_S_per_cm"] * eh["sigma_EH_err_S_per_cm"])
    assert 0.1 < corr < 1  # same ions, so positively correlated; a few ions: clearly so
    hand = h * np.sqrt(a**2 + b**2 - 2 * cov / (ne["sigma_S_per_cm"] * eh["sigma_EH_S_per_cm"]))
    assert out["haven_ratio_err"] == pytest.approx(hand, rel=1e-12)
    assert out["haven_ratio_err"] < h * np.hypot(a, b)
