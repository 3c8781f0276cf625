import numpy as np
import pytest
from MDAnalysis.analysis.rdf import InterRDF

from spemd.analysis.rdf import RDF, first_shell
from spemd.analysis.synthetic import _universe, bound_ligand_universe, fcc_universe, uniform_universe
from spemd.errors import ConfigError, InputError


def test_uniform_points_give_g_of_one_within_poisson_noise():
    u = uniform_universe(n_a=200, n_b=400, n_frames=20, seed=1)
    r = RDF(u.select_atoms("resname A"), u.select_atoms("resname B"), r_max_nm=1.4, bins=70).run().results
    expected = r.n_frames * r.n_pairs * 4 / 3 * np.pi * np.diff(r.edges_nm**3) / r.mean_volume_nm3
    ok = expected > 50
    z = (r.count[ok] - expected[ok]) / np.sqrt(expected[ok])
    assert np.all(np.abs(z) < 5)
    assert abs(np.mean(r.rdf[ok]) - 1) < 0.01
    assert not np.isfinite(r.first_shell_radius_nm)  # no structure, no shell
    assert r.first_shell_reason == "no significant first peak in g(r)" and np.isnan(r.first_shell_cn)
    assert r.normalisation.startswith("box volume")


def test_fcc_lattice_peaks_and_first_shell_cn_12():
    a = 0.4
    u = fcc_universe(a_nm=a, cells=4)
    r = RDF(u.atoms, u.atoms, r_max_nm=0.79, bins=158).run().results
    dr = 0.79 / 158
    for shell in (a / np.sqrt(2), a, a * np.sqrt(1.5)):
        assert np.min(np.abs(r.peaks_nm - shell)) <= dr
    assert a / np.sqrt(2) < r.first_shell_radius_nm < a
    assert r.first_shell_cn == pytest.approx(12.0)
    # running CN reaches 12 + 6 after the second shell
    k = np.searchsorted(r.bins_nm, 0.45)
    assert r.cn[k] == pytest.approx(18.0)


def test_equals_mdanalysis_interrdf():
    u = uniform_universe(n_a=100, n_b=150, n_frames=5, seed=4)
    a, b = u.select_atoms("resname A"), u.select_atoms("resname B")
    ours = RDF(a, b, r_max_nm=1.2, bins=60).run().results
    ref = InterRDF(a, b, nbins=60, range=(0.0, 12.0)).run().results
    np.testing.assert_allclose(ours.rdf, ref.rdf, rtol=1e-6, atol=0)
    np.testing.assert_allclose(ours.count, ref.count)


def test_npt_per_frame_volume_normalisation():
    rng = np.random.default_rng(0)
    n, boxes = 300, np.array([[2.6] * 3, [3.4] * 3] * 4)
    pos = np.stack([rng.random((n, 3)) * b for b in boxes])
    u = _universe(n, pos, boxes, 1.0, resnames=["A"] * 100 + ["B"] * 200, names=["X"] * n)
    a, b = u.select_atoms("resname A"), u.select_atoms("resname B")
    ours = RDF(a, b, r_max_nm=1.2, bins=24).run().results
    mid = slice(8, 24)
    assert abs(np.mean(ours.rdf[mid]) - 1) < 0.03
    ref = InterRDF(a, b, nbins=24, range=(0.0, 12.0)).run().results  # mean-volume normalisation
    v1, v2 = 2.6**3, 3.4**3
    bias = (1 / v1 + 1 / v2) * (v1 + v2) / 4
    assert np.mean(ref.rdf[mid]) / np.mean(ours.rdf[mid]) == pytest.approx(bias, rel=0.02)


def test_accessible_volume_and_residue_exclusion():
    u = uniform_universe(n_a=50, n_b=50, n_frames=3, seed=2)
    a = u.select_atoms("resname A")
    box = RDF(a, a, r_max_nm=1.0, bins=20, exclude_same="residue").run().results
    assert box.n_pairs == 50 * 49  # each atom its own residue: only self pairs excluded
    acc = RDF(a, a, r_max_nm=1.0, bins=20, exclude_same="residue", accessible_volume_nm3=13.5).run().results
    assert acc.normalisation == "accessible volume 13.5 nm^3"
    np.testing.assert_allclose(acc.rdf, box.rdf * 13.5 / 27.0, rtol=1e-6)
    np.testing.assert_allclose(acc.cn, box.cn)  # n(r) is a count, volume independent


def test_invalid_inputs_raise_one_line_errors():
    u = uniform_universe(n_a=10, n_b=10, n_frames=2)
    with pytest.raises(InputError, match="empty atom group"):
        RDF(u.select_atoms("resname Z"), u.atoms)
    with pytest.raises(ConfigError, match="exclude_same"):
        RDF(u.atoms, u.atoms, exclude_same="molecule")
    with pytest.warns(RuntimeWarning, match="half the box"):
        RDF(u.atoms, u.atoms, r_max_nm=2.0, bins=10).run()


def test_first_shell_finds_minimum_after_first_peak():
    r = np.linspace(0.005, 0.995, 100)
    g = 1 + 3 * np.exp(-((r - 0.23) / 0.02) ** 2) - 0.8 * np.exp(-((r - 0.33) / 0.03) ** 2) + \
        0.5 * np.exp(-((r - 0.45) / 0.04) ** 2)
    g[r < 0.18] = 0
    cn = np.cumsum(g)
    out = first_shell(r, g, cn)
    assert out["first_peak_nm"] == pytest.approx(0.23, abs=0.011)
    assert out["first_shell_radius_nm"] == pytest.approx(0.33, abs=0.021)
    assert out["first_shell_cn"] == cn[np.searchsorted(r, out["first_shell_radius_nm"])]


def test_kdtree_and_capped_kernels_agree_with_exclusions():
    from spemd.analysis.synthetic import electrolyte_universe

    u, _, _ = electrolyte_universe(n_pairs=15, n_frames=4, seed=9)
    tf = u.select_atoms("resname TFS")
    k = RDF(tf, tf, r_max_nm=1.0, bins=50, exclude_same="residue").run().results
    c = RDF(tf, tf, r_max_nm=1.0, bins=50, exclude_same="residue", kernel="capped").run().results
    np.testing.assert_array_equal(k.count, c.count)
    assert k.n_pairs == 45 * 45 - 15 * 9  # 3x3 same-residue ordered pairs per anion excluded
    with pytest.raises(ConfigError, match="kernel"):
        RDF(tf, tf, kernel="fast")


def test_first_shell_on_real_small_sample_is_the_visible_minimum():
    # MDAnalysisTests' adk_oplsaa: 4 Na+ in water, 10 frames, triclinic box; g(Na-OW) has its visible
    # minimum at 3.1-3.5 A, with a noise dip on the peak's shoulder near 2.75 A that is not the shell
    datafiles = pytest.importorskip("MDAnalysisTests.datafiles")
    import MDAnalysis as mda

    u = mda.Universe(datafiles.PDB, datafiles.XTC)
    na, ow = u.select_atoms("name NA"), u.select_atoms("name OW")
    assert len(na) == 4 and u.trajectory.n_frames == 10
    for r_max, bins in ((0.8, 80), (1.0, 200), (0.6, 300)):  # any binning
        r = RDF(na, ow, r_max_nm=r_max, bins=bins).run().results
        assert 0.31 <= r.first_shell_radius_nm <= 0.35, (bins, r.first_shell_radius_nm)
        assert r.first_peak_nm == pytest.approx(0.245, abs=0.01)


def test_first_shell_on_real_sample_within_pair_bounds_or_null_with_reason():
    datafiles = pytest.importorskip("MDAnalysisTests.datafiles")
    import MDAnalysis as mda

    u = mda.Universe(datafiles.PDB, datafiles.XTC)
    na, ow = u.select_atoms("name NA"), u.select_atoms("name OW")
    r = RDF(na, ow, r_max_nm=0.8, bins=160, shell_bounds_nm=(0.28, 0.40)).run().results
    assert 0.31 <= r.first_shell_radius_nm <= 0.35 and r.first_shell_reason is None
    # CN at the minimum with its error over the 4 ions: n(r) per ion, standard error of the mean
    k = int(np.argmin(np.abs(r.bins_nm - r.first_shell_radius_nm)))
    assert r.first_shell_cn == pytest.approx(r.cn[k]) and 0 < r.first_shell_cn_sem < 0.5 * r.first_shell_cn
    # bounds that end before the minimum (g still falling at 2.6 A): no radius, and the reason
    r = RDF(na, ow, r_max_nm=0.8, bins=160, shell_bounds_nm=(0.20, 0.26)).run().results
    assert np.isnan(r.first_shell_radius_nm) and np.isnan(r.first_shell_cn)
    assert "inside the pair's bounds" in r.first_shell_reason
    with pytest.raises(ConfigError, match="shell_bounds_nm"):
        RDF(na, ow, shell_bounds_nm=(0.4, 0.3))


def _peo_like_g(seed):
    """Raw g of PEO's Na-O(TFSI) as measured on the default run: peak 2.55 A, g falls to ~0.87 by 3.15 A,
    a weak second shell near 4.3 A, and a finite-size tail of 0.86 (lower than the minimum), with
    counting noise of a small sample; the jackknife error is wider than Poisson (few ions)."""
    r = np.arange(160) * 0.005 + 0.0025
    g0 = 0.86 + 7.0 * np.exp(-((r - 0.255) / 0.02) ** 2) + 0.16 * np.exp(-((r - 0.43) / 0.07) ** 2)
    g0[r < 0.22] = 0.0
    expected = 20.0 * (r / 0.1) ** 2
    count = np.random.default_rng(seed).poisson(g0 * expected)
    return r, count / expected, np.cumsum(count) / 60, count, expected, 1.5 * np.sqrt(np.maximum(count, 1)) / expected


def test_first_shell_of_a_noisy_peo_like_g_is_its_minimum_not_the_tail():
    # the previous rule (lowest g of the whole basin) put this shell at the tail (5-7.7 A) in 16 of 20 seeds
    for seed in range(20):
        r, g, cn, count, expected, sem = _peo_like_g(seed)
        b = first_shell(r, g, cn, count, expected, sem=sem, bounds_nm=(0.28, 0.40))
        assert 0.295 <= b["first_shell_radius_nm"] <= 0.35, (seed, b)
        assert b["first_peak_nm"] == pytest.approx(0.255, abs=0.006)
        u = first_shell(r, g, cn, count, expected, sem=sem)  # no bounds: the minimum, or none with a reason
        assert (0.295 <= u["first_shell_radius_nm"] <= 0.35) or (
            np.isnan(u["first_shell_radius_nm"]) and "does not rise significantly" in u["first_shell_reason"])


def test_g_without_first_peak_or_minimum_has_no_shell_and_says_why():
    r = np.arange(160) * 0.005 + 0.0025
    expected = 20.0 * (r / 0.1) ** 2
    rng = np.random.default_rng(0)
    count = rng.poisson(expected)  # ideal gas: no peak
    out = first_shell(r, count / expected, np.cumsum(count), count, expected, sem=np.sqrt(count + 1) / expected)
    assert np.isnan(out["first_shell_radius_nm"]) and out["first_shell_reason"] == "no significant first peak in g(r)"
    # a peak whose g then decays monotonically to 1 (no minimum): none, whatever the tail's noise
    g0 = 1 + 4 * np.exp(-(r - 0.25) / 0.05) * (r > 0.25) + 4 * np.exp(-((r - 0.25) / 0.02) ** 2) * (r <= 0.25)
    g0[r < 0.2] = 0
    count = rng.poisson(g0 * expected)
    sem = np.sqrt(count + 1) / expected
    out = first_shell(r, count / expected, np.cumsum(count), count, expected, sem=sem)
    assert np.isfinite(out["first_peak_nm"]) and np.isnan(out["first_shell_radius_nm"])
    assert "does not rise significantly" in out["first_shell_reason"]
    out = first_shell(r, count / expected, np.cumsum(count), count, expected, sem=sem, bounds_nm=(0.28, 0.40))
    assert np.isnan(out["first_shell_radius_nm"]) and "inside the pair's bounds" in out["first_shell_reason"]


def test_first_shell_ignores_noise_dips_on_small_samples():
    # a peak at 2.4 A and a broad true minimum at 3.4 A, sampled with few counts (Poisson noise)
    r = np.linspace(0.0025, 0.7975, 160)
    g = 1 + 5 * np.exp(-((r - 0.24) / 0.02) ** 2) - 0.9 * np.exp(-((r - 0.34) / 0.04) ** 2)
    g[r < 0.2] = 0
    expected = 400 * r**2 / r[-1] ** 2  # ideal-gas counts per bin: ~6 at the minimum
    radii = []
    for seed in range(20):
        count = np.random.default_rng(seed).poisson(np.maximum(g, 0) * expected)
        out = first_shell(r, count / expected, np.cumsum(count) / 4, count, expected)
        radii.append(out["first_shell_radius_nm"])
    assert np.all(np.abs(np.array(radii) - 0.34) <= 0.03), radii


@pytest.mark.parametrize("normalisation", ["volume", "lateral"])
def test_finite_size_correction_restores_a_tail_of_one(normalisation):
    """Each of 10 centres holds 3 of the box's 40 B atoms at 0.2 nm: beyond that the B density around a
    centre is 37/V, so the raw tail is 37/40 with the volume reference. The lateral reference also spreads
    the 3 held atoms over the plane at their own height: each adds exactly pi (r_hi^2 - r_lo^2) / A_xy to
    a bin beyond 0.2 nm, so its raw tail is lower. Corrected, both are 1."""
    L = 3.0
    u = bound_ligand_universe(n_a=10, k=3, n_free=10, n_frames=400, box_nm=(L, L, L), seed=3)
    rdf = RDF(u.select_atoms("resname A"), u.select_atoms("resname B"), r_max_nm=1.0, bins=50,
              normalisation=normalisation).run()
    res = rdf.results
    assert res.n_b_per_a == 40
    lo, hi = res.edges_nm[:-1], res.edges_nm[1:]
    free = 37 * 4 / 3 * np.pi * (hi**3 - lo**3) / L**3
    held = 3 * np.pi * (hi**2 - lo**2) / L**2 if normalisation == "lateral" else 3 * free / 37
    tail = res.bins_nm >= 0.5
    raw, corr = rdf.window_mean(0.5, 1.0, corrected=False), rdf.window_mean(0.5, 1.0)
    assert raw["mean"] == pytest.approx(np.mean((free / (free + held))[tail]), abs=0.02)
    assert corr["mean"] == pytest.approx(1.0, abs=0.02)
    assert corr["corrected"] and corr["n_bins"] == 25
    assert 0 < raw["sem"] < 0.02 and 0 < corr["sem"] < 0.02
    # inside the held shell (r < 0.2 nm) nothing is held yet: the correction is only 1 - n_id(r) / N_B, < 0.5 %
    assert res.cn[-1] > 3
    np.testing.assert_allclose(res.rdf_corrected[:9], res.rdf[:9], rtol=5e-3)


def test_finite_size_correction_of_identical_atoms_counts_the_others():
    """Uniform points, A = B: n_b_per_a is N - 1 and an ideal gas needs no correction."""
    u = uniform_universe(n_a=30, n_b=0, n_frames=200, seed=5)
    a = u.select_atoms("resname A")
    rdf = RDF(a, a, r_max_nm=1.2, bins=24).run()
    assert rdf.results.n_b_per_a == 29
    assert rdf.window_mean(0.6, 1.2)["mean"] == pytest.approx(1.0, abs=0.03)
    assert np.all(np.isnan(RDF(a, a, r_min_nm=0.1, r_max_nm=1.2, bins=22).run().results.rdf_corrected))


def test_jackknife_error_of_the_tail_matches_the_spread_of_independent_samples():
    """30 independent small samples (8 centres, 200 B atoms, 5 frames): the mean reported jackknife error
    of the 0.6-1.0 nm tail is the standard deviation of the 30 tails (within the sampling of 30)."""
    tails, sems = [], []
    for seed in range(30):
        u = uniform_universe(n_a=8, n_b=200, n_frames=5, seed=100 + seed)
        w = RDF(u.select_atoms("resname A"), u.select_atoms("resname B"), r_max_nm=1.0, bins=20).run() \
            .window_mean(0.6, 1.0, corrected=False)
        tails.append(w["mean"])
        sems.append(w["sem"])
    ratio = np.mean(sems) / np.std(tails, ddof=1)
    assert 0.7 < ratio < 1.4, ratio


def test_window_outside_the_bins_is_a_config_error():
    u = uniform_universe(n_a=5, n_b=5, n_frames=2)
    rdf = RDF(u.select_atoms("resname A"), u.select_atoms("resname B"), r_max_nm=0.8, bins=8).run()
    with pytest.raises(ConfigError, match=r"window \[0.9, 1.0\) nm"):
        rdf.window_mean(0.9, 1.0)


def test_minimum_at_the_upper_bound_counts_when_g_rises_beyond_it():
    # CPE's Na-O(TFSI) on the default run: minimum ~3.9 A, inside the 2.8-4.0 A bounds, and the second
    # shell's rise only beyond 4.0 A; such a minimum used to be refused as "g still falling at the bound"
    r = np.arange(160) * 0.005 + 0.0025
    shoulder = 0.3 + 6.0 * np.exp(-((r - 0.255) / 0.02) ** 2) + 2.0 * np.exp(-(r - 0.255) / 0.04) * (r > 0.255)
    sem = np.full_like(r, 0.05)
    g = shoulder + 1.4 * np.exp(-((r - 0.47) / 0.035) ** 2)
    g[r < 0.22] = 0.0
    inside = (r > 0.3) & (r < 0.45)
    true_min = r[inside][np.argmin(g[inside])]
    assert 0.385 < true_min < 0.40  # within the smoothing half-width of the bound
    out = first_shell(r, g, np.cumsum(g) * 0.01, sem=sem, bounds_nm=(0.28, 0.40))
    assert out["first_shell_radius_nm"] == pytest.approx(true_min, abs=0.006), out
    # the second shell pushed out: g falls lower beyond the bound than anywhere inside, so no radius
    g2 = shoulder + 1.4 * np.exp(-((r - 0.56) / 0.035) ** 2)
    g2[r < 0.22] = 0.0
    out = first_shell(r, g2, np.cumsum(g2) * 0.01, sem=sem, bounds_nm=(0.28, 0.40))
    assert np.isnan(out["first_shell_radius_nm"]) and "inside the pair's bounds" in out["first_shell_reason"]


def test_all_pairs_kernel_counts_the_kdtree_pairs_with_coordinates_outside_the_box():
    # the compiled all-pairs loop (analysis/_kernels.py) folds coordinates into the box itself: atoms
    # up to two box lengths outside it give the same pair counts and g(r) as the periodic KD-tree
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    rng = np.random.default_rng(4)
    n, frames, L = 120, 3, 25.0
    u = mda.Universe.empty(n, n_residues=n, atom_resindex=np.arange(n), trajectory=True)
    u.add_TopologyAttr("names", ["NA"] * 30 + ["O"] * 90)
    u.add_TopologyAttr("resnames", ["NA"] * 30 + ["O"] * 90)
    xyz = rng.random((frames, n, 3)) * L + L * rng.integers(-2, 3, size=(frames, n, 3))
    u.load_new(xyz.astype(np.float32), format=MemoryReader, dimensions=[L, L, L, 90, 90, 90])
    na, o = u.select_atoms("name NA"), u.select_atoms("name O")
    runs = {k: RDF(na, o, r_max_nm=1.2, bins=60, kernel=k).run().results for k in ("all_pairs", "kdtree", "capped")}
    assert runs["all_pairs"].count.sum() > 0
    np.testing.assert_array_equal(runs["all_pairs"].count, runs["kdtree"].count)
    np.testing.assert_array_equal(runs["all_pairs"].count, runs["capped"].count)
    np.testing.assert_allclose(runs["all_pairs"].rdf, runs["kdtree"].rdf, rtol=1e-12)
