import numpy as np
import pytest

from spemd.analysis.arrhenius import arrhenius_fit, vft_fit
from spemd.errors import InputError
from spemd.units import BOLTZMANN_EV_PER_K


def test_arrhenius_recovers_known_Ea():
    T = np.array([313.0, 333.0, 353.0, 373.0, 393.0])
    Ea = 0.42
    D = 1e-3 * np.exp(-Ea / (BOLTZMANN_EV_PER_K * T))
    exact = arrhenius_fit(T, D)
    assert exact["Ea_eV"] == pytest.approx(Ea, rel=1e-10)
    rng = np.random.default_rng(1)
    noisy = D * (1 + 0.03 * rng.normal(size=T.size))
    fit = arrhenius_fit(T, noisy, 0.03 * D)
    assert abs(fit["Ea_eV"] - Ea) < 3 * fit["Ea_err_eV"]
    assert 0 < fit["Ea_err_eV"] < 0.1 and fit["weighted"]


def test_vft_recovers_parameters():
    T = np.array([300.0, 320.0, 340.0, 360.0, 380.0, 400.0])
    B, T0 = 900.0, 190.0
    s = 0.5 * np.exp(-B / (T - T0))
    fit = vft_fit(T, s)
    assert fit["B_K"] == pytest.approx(B, rel=1e-3)
    assert fit["T0_K"] == pytest.approx(T0, abs=0.5)
    assert fit["Ea_eV"] == pytest.approx(B * BOLTZMANN_EV_PER_K, rel=1e-3)


def test_fit_inputs_checked():
    with pytest.raises(InputError, match="need >= 2"):
        arrhenius_fit([300.0, 300.0], [1.0, 2.0])
    with pytest.raises(InputError, match="need >= 4"):
        vft_fit([300.0, 320.0, 340.0], [1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="> 0"):
        arrhenius_fit([300.0, 320.0], [1.0, -2.0])
