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
    for seed in range(30):
        cat = brownian_positions(60, 400, 2e-3, 1.0, (4, 4, 4), seed=10 + seed)
        an = brownian_positions(60, 400, 1e-3, 1.0, (4, 4, 4), seed=500 + seed)
        out = conductivity_from_positions(cat, an, 1.0, 64.0, 300.0, charge_scale=0.8)
        ne, eh = out["nernst_einstein"], out["einstein_helfand"]
        hand = nernst_einstein(2e-3, 1e-3, 60, 60, 64.0, 300.0, charge_scale=0.8)["sigma_S_per_cm"]
        assert ne["sigma_S_per_cm"] == pytest.approx(hand, rel=0.15)
        z.append((eh["sigma_EH_S_per_cm"] - hand) / eh["sigma_EH_err_S_per_cm"])
        vals.append(eh["sigma_EH_S_per_cm"])
    # unbiased: the mean over seeds agrees with the hand value within its standard error
    assert abs(np.mean(vals) - hand) < 3 * np.std(vals, ddof=1) / np.sqrt(len(vals))
    # the stated per-run error is honest (block SEM with 4 dof): ~2/3 within 1 sigma, nearly all within 3
    z = np.abs(z)
    assert 0.45 <= np.mean(z < 1) <= 0.9
    assert np.mean(z < 3) >= 0.9


def test_conductivity_class_on_wrapped_universe_equals_position_route():
    u, cat, an = electrolyte_universe(n_pairs=12, n_frames=80, seed=3, wrap=True)
    c = Conductivity(u.select_atoms("resname NA"), u.select_atoms("resname TFS"), charge_scale=0.75,
                     temperature_K=330.0).run().results
    ref = conductivity_from_positions(cat, an, 1.0, 27.0, 330.0, charge_scale=0.75)
    assert c.nernst_einstein["sigma_S_per_cm"] == pytest.approx(ref["nernst_einstein"]["sigma_S_per_cm"], rel=1e-4)
    assert c.einstein_helfand["sigma_EH_S_per_cm"] == pytest.approx(ref["einstein_helfand"]["sigma_EH_S_per_cm"],
                                                                    rel=1e-3)
    assert c.nernst_einstein["charge_scale"] == 0.75
    assert 0 < c.nernst_einstein["t_plus"] < 1
