import csv
import json
from pathlib import Path

import numpy as np
import pytest

from spemd.analysis.production import analyse_production
from spemd.analysis.summary import summarise
from spemd.errors import ConfigError, InputError

DATA = Path(__file__).parent / "data"
TOP, TRJ = DATA / "tiny_electrolyte.pdb", DATA / "tiny_electrolyte.dcd"


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    out = tmp_path_factory.mktemp("prod") / "results" / "tiny" / "rep0" / "353K" / "analysis"
    res = analyse_production(TOP, TRJ, out, {"rdf_bins": 100}, 0.8, 353.0, {"system": "tiny", "replica": 0})
    return out, res


def test_files_and_columns(produced):
    out, res = produced
    for pair in ("Na-O_TFSI", "Na-O_ether", "Na-N_TFSI", "Na-Na"):
        rows = list(csv.reader((out / f"rdf_{pair}.csv").open()))
        assert rows[0] == ["r (nm)", "g(r)", "n(r)", "g(r) SEM", "g(r) finite-size corrected",
                           "g(r) finite-size corrected SEM", "n(r) SEM"] and len(rows) == 101
        # transport.json's tail is the mean of the file's g over the window's bins (6-8 A by default)
        r = np.array([float(row[0]) for row in rows[1:]])
        g, g_corr = (np.array([float(row[k]) for row in rows[1:]]) for k in (1, 4))
        tail = res["rdf"][pair]["tail"]
        assert tail["window_A"] == [6.0, 8.0]
        window = (r >= 0.6) & (r < 0.8)
        assert tail["n_bins"] == int(window.sum()) > 0
        assert tail["g"] == pytest.approx(g[window].mean(), rel=1e-6)
        assert tail["g_corrected"] == pytest.approx(g_corr[window].mean(), rel=1e-6)
        assert tail["g_sem"] > 0 and tail["g_corrected_sem"] > 0
    assert not (out / "rdf_Na-metal.csv").exists()  # no MOF in this box
    for sp in ("Na", "TFSI"):
        rows = list(csv.reader((out / f"msd_{sp}.csv").open()))
        assert rows[0] == ["lag (ps)", "MSD (nm^2)"] and len(rows) == 41
        assert float(rows[2][0]) == pytest.approx(1.0, rel=1e-5)  # frame interval from the DCD
    for name in ("rdf_Na-O_TFSI", "rdf_all", "msd"):
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 1000
    on_disk = json.loads((out / "transport.json").read_text())
    assert on_disk["diffusion"]["Na"]["D_cm2_per_s"] == res["diffusion"]["Na"]["D_cm2_per_s"]
    assert "packages" in on_disk["provenance"] and on_disk["provenance"]["system"] == "tiny"


def test_physics_of_the_reference_box(produced):
    _, res = produced
    rdf = res["rdf"]["Na-O_TFSI"]
    assert rdf["first_peak_A"] == pytest.approx(2.3, abs=0.11)  # Na 0..5 sit 0.23 nm from an O1
    # the shell lies within the pair's bounds (2.8-4.0 A), or there is none and the reason says why
    if rdf["first_shell_radius_A"] is None:
        assert rdf["first_shell_reason"] and rdf["first_shell_cn"] is None and res["pairing"] is None
        assert any(f.startswith("pairing and residence skipped") for f in res["flags"])
        return
    assert 2.8 <= rdf["first_shell_radius_A"] <= 4.0 and rdf["first_shell_reason"] is None
    assert rdf["first_shell_bounds_A"] == pytest.approx([2.8, 4.0])
    assert rdf["normalisation"].startswith("box volume")
    # 6 of 12 Na are contact pairs by construction; the others meet anions only by chance
    assert 0.3 < res["pairing"]["free_fraction"] < 0.6
    assert res["pairing"]["cip_fraction"] >= 0.45
    # 40 frames: a D is reported only with a constant-slope window, else None with the reason
    for sp in ("Na", "TFSI"):
        d = res["diffusion"][sp]
        assert np.isfinite(d["beta"])
        if d["diffusive"]:
            assert d["D_sigma_nm2_per_ps"] > 0 and d["D_cm2_per_s"] == pytest.approx(d["D_nm2_per_ps"] * 1e-2)
            assert d["beta_flag"] in (None, "cage offset", "negative offset")
        else:
            assert d["D_nm2_per_ps"] is None and d["no_window_reason"].startswith("no diffusive window: ")
            assert d["beta_flag"] in ("sub-diffusive", "super-diffusive", "unresolved")
            assert any(f.startswith(f"{sp}: D not reported") for f in res["flags"])
    c = res["conductivity"]
    assert c["charge_scale"] == 0.8
    if res["diffusion"]["Na"]["diffusive"] and res["diffusion"]["TFSI"]["diffusive"]:
        assert c["sigma_NE_S_per_cm"] > 0 and 0 < c["t_plus_ideal"] < 1 and c["sigma_EH_err_S_per_cm"] > 0
    else:
        assert c["sigma_EH_S_per_cm"] is None and "no diffusive window" in c["EH_no_window_reason"]


def test_short_trajectory_still_gives_finite_numbers_and_flags(tmp_path):
    import MDAnalysis as mda

    u = mda.Universe(str(TOP), str(TRJ))
    short = tmp_path / "short.dcd"
    with mda.Writer(str(short), u.atoms.n_atoms, dt=1.0) as w:
        for ts in u.trajectory[:3]:
            w.write(u.atoms)
    res = analyse_production(TOP, short, tmp_path / "a", {}, 1.0, 300.0)
    for sp in ("Na", "TFSI"):
        d = res["diffusion"][sp]  # 3 frames: no window of >= 3 lags, so no D, and the reason says so
        assert d["D_nm2_per_ps"] is None and not d["diffusive"] and d["no_window_reason"]
    assert any("widened" in f for f in res["flags"])


def test_r_max_clipped_with_warning(tmp_path):
    with pytest.warns(RuntimeWarning, match="clipped"):
        res = analyse_production(TOP, TRJ, tmp_path, {"rdf_r_max_nm": 2.0, "rdf_bins": 20}, 1.0, 300.0)
    assert res["rdf"]["Na-Na"]["r_max_nm"] <= 1.3
    assert any("clipped" in f for f in res["flags"])


def test_invalid_inputs(tmp_path):
    with pytest.raises(InputError, match="tiny_mismatch.pdb"):
        analyse_production(DATA / "tiny_mismatch.pdb", TRJ, tmp_path, {}, 1.0, 300.0)
    with pytest.raises(ConfigError, match="unknown key analysis.rdf_nbins"):
        analyse_production(TOP, TRJ, tmp_path, {"rdf_nbins": 3}, 1.0, 300.0)
    with pytest.raises(InputError, match="does not exist"):
        analyse_production(TOP, tmp_path / "none.dcd", tmp_path, {}, 1.0, 300.0)
    assert not (tmp_path / "transport.json").exists()


def test_summary_rows_and_replica_combination(produced, tmp_path):
    out, res = produced
    second = tmp_path / "results" / "tiny" / "rep1" / "353K" / "analysis" / "transport.json"
    second.parent.mkdir(parents=True)
    data = json.loads((out / "transport.json").read_text())
    data["replica"] = None  # taken from the path
    data["diffusion"]["Na"]["D_cm2_per_s"] *= 2
    second.write_text(json.dumps(data))
    summarise([out / "transport.json", second], tmp_path / "summary.csv")
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["replica"] for r in rows] == ["0", "1", "combined (n=2)"]
    d0, s0 = res["diffusion"]["Na"]["D_cm2_per_s"], res["diffusion"]["Na"]["D_sigma_cm2_per_s"]
    assert float(rows[2]["D_Na_cm2_per_s"]) == pytest.approx(1.5 * d0, rel=1e-5)  # equal weights
    assert float(rows[2]["D_Na_sigma_cm2_per_s"]) >= s0 / np.sqrt(2) * 0.999
    with pytest.raises(InputError, match="transport json"):
        summarise([tmp_path / "missing.json"], tmp_path / "x.csv")


def test_shell_radius_override_per_pair_and_bad_pair_name(tmp_path):
    res = analyse_production(TOP, TRJ, tmp_path / "a", {"rdf_bins": 100, "shell_radius_nm": {"Na-O_TFSI": 0.30}},
                             0.8, 353.0)
    rdf = res["rdf"]["Na-O_TFSI"]
    assert rdf["first_shell_radius_nm"] == 0.30 and rdf["first_shell_source"].startswith("config")
    assert res["pairing"]["cutoff_nm"] == pytest.approx(0.30)
    assert res["rdf"]["Na-O_ether"]["first_shell_source"] == "minimum of g(r)"
    with pytest.raises(ConfigError, match="unknown pair 'Na-OW'; allowed pairs: Na-O_TFSI, Na-O_ether"):
        analyse_production(TOP, TRJ, tmp_path / "b", {"shell_radius_nm": {"Na-OW": 0.3}}, 0.8, 353.0)


def test_fallback_radius_only_where_the_runs_own_minimum_is_refused(tmp_path):
    cfg = {"rdf_bins": 100, "shell_radius_fallback_nm": {"Na-O_ether": 0.33, "Na-O_TFSI": 0.99}}
    res = analyse_production(TOP, TRJ, tmp_path / "a", cfg, 0.8, 353.0)
    ether, tfsi = res["rdf"]["Na-O_ether"], res["rdf"]["Na-O_TFSI"]
    # Na-O(ether) has no significant minimum in this tiny file: the fallback radius, its n(r), the reason kept
    assert ether["first_shell_radius_nm"] == 0.33 and ether["first_shell_source"].startswith("fallback")
    assert "does not rise significantly" in ether["first_shell_reason"]
    rows = list(csv.DictReader((tmp_path / "a" / "rdf_Na-O_ether.csv").open()))
    r_upper = np.array([float(x["r (nm)"]) for x in rows]) + 0.5 * 1.0 / 100  # bins' upper edges
    n = np.array([float(x["n(r)"]) for x in rows])
    assert ether["first_shell_cn"] == pytest.approx(np.interp(0.33, r_upper, n), rel=1e-6)  # CSV: 8 digits
    # Na-O(TFSI) has its own minimum: the fallback is not used, and pairing says where its cutoff came from
    assert tfsi["first_shell_source"] == "minimum of g(r)" and tfsi["first_shell_radius_nm"] < 0.4
    assert res["pairing"]["cutoff_source"] == "minimum of g(r)"
    with pytest.raises(ConfigError, match=r"analysis.shell_radius_fallback_nm.Na-Na: -1 must be a radius > 0 nm"):
        analyse_production(TOP, TRJ, tmp_path / "b", {"shell_radius_fallback_nm": {"Na-Na": -1}}, 0.8, 353.0)
