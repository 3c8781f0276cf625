import numpy as np
import pytest
from MDAnalysis.analysis.msd import EinsteinMSD

from spemd.analysis.msd import MSD, combine_estimates, fit_diffusion, msd_fft, yeh_hummer_correction_nm2_per_ps
from spemd.analysis.synthetic import ballistic_universe, brownian_positions, brownian_universe, electrolyte_universe
from spemd.errors import InputError
from spemd.units import BOLTZMANN_J_PER_K


def _direct_msd(x):
    T = len(x)
    return np.array([0.0] + [np.mean(np.sum((x[m:] - x[:-m]) ** 2, axis=-1)) for m in range(1, T)])


def test_fft_msd_equals_direct_sum():
    x = brownian_positions(7, 50, 1e-2, 1.0, (3, 3, 3), seed=3)
    np.testing.assert_allclose(msd_fft(x), _direct_msd(x), rtol=1e-10, atol=1e-12)


def test_ballistic_msd_is_d_t_squared():
    u = ballistic_universe(n_particles=10, n_frames=50, dt_ps=0.01)
    r = MSD(u.atoms).run().results
    t = r.lagtimes_ps
    np.testing.assert_allclose(r.msd_nm2[1:], 3 * t[1:] ** 2, rtol=1e-5)
    assert r.beta == pytest.approx(2.0, abs=1e-4)
    assert not r.beta_ok


def test_equals_einstein_msd_fft_and_unwrapping_is_exact():
    pytest.importorskip("tidynamics")
    wrapped = brownian_universe(n_particles=60, n_frames=120, D_nm2_per_ps=5e-3, seed=5, wrap=True)
    unwrapped = brownian_universe(n_particles=60, n_frames=120, D_nm2_per_ps=5e-3, seed=5, wrap=False)
    ours = MSD(wrapped.atoms).run().results  # unwraps itself
    ref = EinsteinMSD(unwrapped.atoms, msd_type="xyz", fft=True).run().results
    np.testing.assert_allclose(ours.msd_nm2[1:] * 100.0, ref.timeseries[1:], rtol=1e-6)  # A^2 vs nm^2
    assert ours.max_step_fraction < 0.5 and ours.unwrap_precondition_ok


def test_brownian_D_recovered_and_sigma_honest_over_seeds():
    D_true = 2e-3
    z = []
    for seed in range(24):
        u = brownian_universe(n_particles=40, n_frames=300, D_nm2_per_ps=D_true, dt_ps=1.0, seed=100 + seed)
        r = MSD(u.atoms, n_blocks=5).run().results
        assert r.n_blocks == 5 and "block averaging" in r.uncertainty_method
        z.append((r.D_nm2_per_ps - D_true) / r.D_sigma_nm2_per_ps)
    z = np.abs(np.array(z))
    assert np.sum(z < 3) >= 23  # t-distributed (4 dof): ~4 % beyond 3 sigma expected
    frac1 = np.mean(z < 1)
    assert 0.45 <= frac1 <= 0.9, frac1  # roughly two thirds


def test_residue_centres_of_mass_are_unwrapped_and_whole():
    u, cat, an = electrolyte_universe(n_pairs=10, n_frames=60, seed=2, wrap=True)
    r = MSD(u.select_atoms("resname TFS"), compound="residues").run().results
    np.testing.assert_allclose(r.msd_nm2, msd_fft(an), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(r.positions_nm - r.positions_nm[0], an - an[0], atol=1e-4)


def test_cm2_per_s_conversion_and_window_reporting():
    u = brownian_universe(n_particles=50, n_frames=200, D_nm2_per_ps=1e-3, seed=1)
    r = MSD(u.atoms, fit_start_fraction=0.2, fit_end_fraction=0.6).run().results
    assert r.D_cm2_per_s == pytest.approx(r.D_nm2_per_ps * 1e-2)
    assert r.fit_window_ps[0] == pytest.approx(0.2 * 199, abs=1) and r.fit_window_ps[1] == pytest.approx(0.6 * 199, abs=1)


def test_too_few_frames_and_unequal_spacing_raise():
    u = brownian_universe(n_particles=5, n_frames=3, seed=0)
    with pytest.raises(InputError, match="MSD fit window: 3 frames"):
        MSD(u.atoms).run()
    u = brownian_universe(n_particles=5, n_frames=30, seed=0)
    with pytest.raises(InputError, match="not equally spaced"):
        MSD(u.atoms).run(frames=[0, 1, 2, 4, 5, 6, 8, 9, 10, 11])
    with pytest.raises(InputError, match="empty atom group"):
        MSD(u.select_atoms("name NOPE"))


def test_short_trajectory_gives_finite_numbers_with_fallback_sigma():
    u = brownian_universe(n_particles=5, n_frames=8, seed=0)
    r = MSD(u.atoms).run().results
    assert np.isfinite(r.D_nm2_per_ps) and np.isfinite(r.D_sigma_nm2_per_ps) and np.isfinite(r.beta)
    assert r.n_blocks == 0 and "block" not in r.uncertainty_method.split("(")[0]


def test_combine_estimates():
    c = combine_estimates([1.0, 2.0], [1.0, 1.0])
    assert c["mean"] == pytest.approx(1.5)
    assert c["sigma"] == pytest.approx(1 / np.sqrt(2))  # Birge ratio 0.707 < 1: not scaled
    c = combine_estimates([1.0, 3.0], [0.1, 0.1])
    birge = np.sqrt(((1 - 2) ** 2 + (3 - 2) ** 2) / 0.01 / 1)
    assert c["sigma"] == pytest.approx(0.1 / np.sqrt(2) * birge)
    c = combine_estimates([1.0, 2.0, 6.0], [np.nan, 1.0, 1.0])
    assert c["mean"] == pytest.approx(3.0) and c["sigma"] == pytest.approx(np.std([1, 2, 6], ddof=1) / np.sqrt(3))


def test_yeh_hummer_hand_formula():
    corr = yeh_hummer_correction_nm2_per_ps(5.0, 1e-3, 300.0)
    hand_m2_s = BOLTZMANN_J_PER_K * 300.0 * 2.837297 / (6 * np.pi * 1e-3 * 5e-9)
    assert corr == pytest.approx(hand_m2_s * 1e18 / 1e12)


def test_fit_diffusion_log_log_window_shift():
    t = np.arange(400) * 1.0
    msd = 6 * 1e-3 * t + 0.1 * (1 - np.exp(-t / 15.0))  # cage plateau then diffusive
    f = fit_diffusion(t, msd, None, fit_start_fraction=0.02, fit_end_fraction=0.5)
    assert f["beta_ok"] and "moved" in f["window_selection"]
    assert f["D_nm2_per_ps"] == pytest.approx(1e-3, rel=0.02)


def test_ci95_uses_student_t():
    u = brownian_universe(n_particles=30, n_frames=200, D_nm2_per_ps=1e-3, seed=7)
    r = MSD(u.atoms, n_blocks=5).run().results
    assert r.D_dof == 4
    assert r.D_ci95_half_width_nm2_per_ps == pytest.approx(2.7764451 * r.D_sigma_nm2_per_ps, rel=1e-6)
