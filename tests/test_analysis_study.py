"""analysis.study on synthetic transport.json files (tests/study_synthetic.py mirrors analysis.production)."""

import argparse
import io
import csv
import json
import math

import numpy as np
import pytest

from spemd.analysis.paper import peo_melt_density_g_cm3
from spemd.analysis.study import add_study_parser, aggregate, load_runs, run_study
from spemd.analysis.study_common import density_check, density_drift, npt_density, verdict
from spemd.analysis.study_compare import comparison_rows
from spemd.analysis.study_render import aggregated_csv, expected_outputs
from spemd.errors import InputError
from spemd.units import BOLTZMANN_EV_PER_K
from study_synthetic import CLAIM_IDS, arrhenius, transport_record, write_paper_like_study, write_run


def _two_systems(tmp_path, T=353.0, peo=None, cpe=None, density=None):
    """PEO (3 replicas, hand-chosen numbers) and CPE-10 (1 replica) at one temperature."""
    peo = peo or [dict(D_Na=1e-7, D_Na_sigma=1e-8, cn=4.0), dict(D_Na=2e-7, D_Na_sigma=2e-8, cn=5.0),
                  dict(D_Na=4e-7, D_Na_sigma=2e-8, cn=6.0)]
    cpe = cpe or [dict(D_Na=2e-6, D_Na_sigma=1e-7, cn=3.0)]
    paths = []
    for name, runs, wts in (("PEO", peo, [0, 0, 0]), ("CPE-10", cpe, [9.8, 10.2, 10.0])):
        for rep, kw in enumerate(runs):
            paths.append(write_run(tmp_path, name, rep, T, transport_record(name, rep, T, **kw), wt=wts[rep],
                                   metal="FeNi" if wts[rep] else None, density=density))
    return paths


def test_replicas_combine_to_hand_computed_weighted_mean_and_birge_scaled_error(tmp_path):
    agg = aggregate(load_runs(_two_systems(tmp_path)))
    D = agg["points"][("PEO", 353.0)]["D_Na_cm2_per_s"]
    # weights 1/s^2: 1e16, 0.25e16, 0.25e16
    mean = (1e-7 * 1.0 + 2e-7 * 0.25 + 4e-7 * 0.25) / 1.5
    internal = 1 / math.sqrt(1.5e16)
    chi2 = 1e16 * (1e-7 - mean) ** 2 + 0.25e16 * (2e-7 - mean) ** 2 + 0.25e16 * (4e-7 - mean) ** 2
    assert D["mean"] == pytest.approx(1.6666667e-7, rel=1e-6) == pytest.approx(mean)
    assert D["sigma"] == pytest.approx(internal * math.sqrt(chi2 / 2), rel=1e-9)
    assert D["sigma"] == pytest.approx(7.817e-8, rel=1e-3)
    cn = agg["points"][("PEO", 353.0)]["cn_NaO_TFSI"]  # no per-run sigma: mean and standard error
    assert (cn["mean"], cn["sigma"]) == (pytest.approx(5.0), pytest.approx(1 / math.sqrt(3)))
    single = agg["points"][("CPE-10", 353.0)]["D_Na_cm2_per_s"]
    assert (single["mean"], single["sigma"]) == (pytest.approx(2e-6), pytest.approx(1e-7))
    assert agg["systems"]["CPE-10"]["wt_percent"] == pytest.approx(9.8)  # the one replica's achieved wt%
    assert agg["systems"]["CPE-10"]["metal"] == "FeNi"


def test_loading_falls_back_to_config_and_fails_without_either(tmp_path):
    p = write_run(tmp_path, "X", 0, 353.0, transport_record("X", 0, 353.0, D_Na=1e-7, D_Na_sigma=1e-8))
    agg = aggregate(load_runs([p]), {"X": {"eo_per_chain": 10, "eo_per_na": 20, "mof_wt_percent": 7}})
    assert agg["systems"]["X"]["wt_percent"] == 7.0 and agg["systems"]["X"]["metal"] == "FeNi"
    assert "config" in agg["systems"]["X"]["wt_source"]
    with pytest.raises(InputError, match="system X: no build/composition.json"):
        aggregate(load_runs([p]))


@pytest.mark.parametrize("diff, sigma, expected", [(2.01, 1.0, "yes"), (1.99, 1.0, "inconclusive"),
                                                    (-1.99, 1.0, "inconclusive"), (-2.01, 1.0, "no"),
                                                    (5.0, float("nan"), "inconclusive"), (float("nan"), 1.0,
                                                                                         "not available")])
def test_verdict_follows_the_two_sigma_rule(diff, sigma, expected):
    assert verdict(diff, sigma) == expected


def _row(rows, rid, T=353.0):
    found = [r for r in rows if r["id"] == rid and (r["temperature_K"] == T or r["temperature_K"] is None)]
    assert len(found) == 1, (rid, found)
    return found[0]


def test_ordering_rows_decide_by_two_combined_sigma(tmp_path):
    # D: CPE-10 - PEO = 2e-6 - 1.6667e-7 >> 2 sigma -> yes
    # CN: PEO(5 +- 0.577) - CPE(3, one replica: no sigma) -> inconclusive
    # t+: composite lower by 0.1 with sigmas 0.02 each (combined 0.028) -> no
    peo = [dict(D_Na=1e-7, D_Na_sigma=1e-8, cn=4.0, t_plus=0.4, t_plus_err=0.02),
           dict(D_Na=2e-7, D_Na_sigma=2e-8, cn=5.0, t_plus=0.4, t_plus_err=0.02),
           dict(D_Na=4e-7, D_Na_sigma=2e-8, cn=6.0, t_plus=0.4, t_plus_err=0.02)]
    cpe = [dict(D_Na=2e-6, D_Na_sigma=1e-7, cn=3.0, t_plus=0.3, t_plus_err=0.02 * math.sqrt(3))]
    rows = comparison_rows(aggregate(load_runs(_two_systems(tmp_path, peo=peo, cpe=cpe))))
    d = _row(rows, "D_Na_composite_gt_plain")
    assert d["verdict"] == "yes" and d["difference"] == pytest.approx(2e-6 - 1.6666667e-7, rel=1e-6)
    assert _row(rows, "cn_NaO_TFSI_weaker_with_MOF")["verdict"] == "inconclusive"
    t = _row(rows, "t_plus_ideal_composite_gt_plain")
    # PEO combined: 0.4 +- 0.02/sqrt(3); CPE: 0.3 +- 0.02 sqrt(3); combined sigma = 0.02 sqrt(1/3 + 3)
    assert t["sigma_combined"] == pytest.approx(0.02 * math.sqrt(1 / 3 + 3))
    assert t["difference"] == pytest.approx(-0.1) and t["verdict"] == "no"
    # one temperature, no Fe-only/Ni-only host, no other loadings: those rows say why
    for rid in ("Ea_sigma_composite", "sigma_30C_composite", "Fe_only_below_FeNi", "Ni_only_below_FeNi",
                "optimum_loading_10wt"):
        r = [x for x in rows if x["id"] == rid][0]
        assert r["verdict"] == "not available" and r["ours"].startswith("not available: "), r
    assert "1 temperature(s)" in _row(rows, "Ea_sigma_composite")["ours"]


def test_study_table_has_every_row_and_recovers_a_known_activation_energy(tmp_path):
    Ea = 0.35
    paths, cfg = write_paper_like_study(tmp_path, Ea_eV=Ea)
    rec = run_study(paths, tmp_path / "study", cfg)
    out = tmp_path / "study"
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == set(expected_outputs(cfg, [333, 353, 373, 393]))
    with open(out / "comparison.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert {r["id"] for r in table} == CLAIM_IDS
    html = (out / "comparison_table.html").read_text()
    assert all(f'data-row-id="{i}"' in html for i in CLAIM_IDS)
    rows = rec["comparison"]
    ea = [r for r in rows if r["id"] == "Ea_sigma_composite"][0]
    assert float(ea["ours"].split(" ± ")[0]) == pytest.approx(Ea, abs=1e-3)
    assert ea["verdict"] == "no"  # 0.35 is 0.15 eV from the paper's 0.50, beyond the 0.10 eV tolerance
    s30 = [r for r in rows if r["id"] == "sigma_30C_composite"][0]
    exact = arrhenius(303.15, 10.0, Ea) * 4.0  # CPE-10's conductivity law in the synthetic study
    assert float(s30["ours"].split(" ± ")[0]) == pytest.approx(exact, rel=1e-3)
    # optimum at 10 wt% and Fe-Ni above Fe-only/Ni-only in the synthetic data, decisively
    for rid in ("optimum_loading_10wt", "Fe_only_below_FeNi", "Ni_only_below_FeNi", "D_Na_composite_gt_plain"):
        assert {r["verdict"] for r in rows if r["id"] == rid} == {"yes"}, rid
    study = json.loads((out / "study.json").read_text())
    assert "provenance" in study and study["selection"] == {"plain": "PEO", "composite": "CPE-10",
                                                            "Fe": "CPE-10-Fe", "Ni": "CPE-10-Ni"}


def test_arrhenius_fit_through_aggregation_recovers_Ea_of_D(tmp_path):
    from spemd.analysis.study_compare import arrhenius_with_prediction

    T = np.array([333.0, 353.0, 373.0, 393.0])
    D = 2e-3 * np.exp(-0.42 / (BOLTZMANN_EV_PER_K * T))
    fit = arrhenius_with_prediction(T, D, 0.03 * D, 303.15)
    assert fit["Ea_eV"] == pytest.approx(0.42, abs=1e-9)
    assert math.exp(fit["ln_at_target"]) == pytest.approx(2e-3 * math.exp(-0.42 / (BOLTZMANN_EV_PER_K * 303.15)))
    # the extrapolation error grows outside the fitted range
    inside = arrhenius_with_prediction(T, D, 0.03 * D, 363.0)["ln_at_target_err"]
    assert fit["ln_at_target_err"] > 2 * inside > 0


def test_density_check_flags_five_percent_and_passes_one_percent(tmp_path):
    ref = peo_melt_density_g_cm3(373.0)["density_g_cm3"]
    assert ref == pytest.approx(1.0 / (0.8766 * math.exp(7.087e-4 * 99.85)))
    bad, good = density_check(1.05 * ref, 0.002, ref), density_check(1.01 * ref, 0.002, ref)
    assert bad["flagged"] and bad["verdict"] == "no" and bad["deviation_percent"] == pytest.approx(5.0)
    assert not good["flagged"] and good["verdict"] == "yes" and good["deviation_percent"] == pytest.approx(1.0)
    # through the files: state.csv second half at +5 % -> the PEO row is flagged, the composite gets no row
    dens = [0.8] * 10 + list(1.05 * ref + 0.001 * np.array([1, -1] * 5))
    rows = comparison_rows(aggregate(load_runs(_two_systems(tmp_path, T=373.0, density=dens))))
    drows = [r for r in rows if r["id"] == "density_vs_measured"]
    assert [r["system"] for r in drows] == ["PEO"]
    assert drows[0]["flagged"] and drows[0]["verdict"] == "no" and "FLAG" in drows[0]["note"]
    assert drows[0]["deviation_percent"] == pytest.approx(5.0, abs=0.01)
    assert "Rodgers" in drows[0]["paper"] and "not like-for-like" in drows[0]["note"]


def test_npt_density_averages_the_second_half_with_block_error(tmp_path):
    p = write_run(tmp_path, "PEO", 0, 353.0, transport_record("PEO", 0, 353.0, D_Na=1e-7, D_Na_sigma=1e-8),
                  density=[0.5] * 10 + [1.0, 1.2] * 5)
    d = npt_density(p.parent.parent / "md" / "equilibrate" / "state.csv")
    assert d["mean"] == pytest.approx(1.1) and d["n_samples"] == 10
    assert d["sigma"] == pytest.approx(0.0)  # five blocks of (1.0, 1.2): identical block means


def test_density_drift_recovers_a_known_slope_and_decides_the_plateau():
    rng = np.random.default_rng(7)
    t = np.arange(200) * 5.0  # ps
    noise = 0.0005 * rng.standard_normal(len(t))
    ramp = density_drift(t, 1.0 + 2e-5 * t + noise)  # +2 % per ns over a ~1 ns window
    assert ramp["slope_g_cm3_per_ns"] == pytest.approx(0.02, rel=0.05)
    assert ramp["drift_percent"] == pytest.approx(2e-5 * 995 / 1.00995 * 100, rel=0.05)
    assert ramp["verdict"] == "no" and ramp["drift_sigma_g_cm3"] > 0
    flat = density_drift(t, 1.0 + noise)
    assert abs(flat["drift_percent"]) < 0.1 and flat["verdict"] == "yes"
    assert density_drift(t[:2], [1.0, 1.1])["verdict"] == "not available"


def test_protocol_check_rows_flag_drifting_density_and_subdiffusive_na(tmp_path):
    drifting = list(np.linspace(1.0, 1.1, 20))  # second half rises ~5 %
    paths = _two_systems(tmp_path, density=drifting)
    runs = load_runs(paths)
    for r in runs:
        if r["system"] == "CPE-10":
            r["beta_Na"], r["diffusive_Na"], r["beta_flag_Na"] = 0.55, False, "sub-diffusive"
    rows = comparison_rows(aggregate(runs))
    plateau = {r["system"]: r for r in rows if r["id"] == "density_plateau"}
    assert plateau["PEO"]["verdict"] == "no" and "rep0: +4." in plateau["PEO"]["ours"]
    beta = {r["system"]: r for r in rows if r["id"] == "na_msd_diffusive"}
    assert beta["PEO"]["verdict"] == "yes" and beta["CPE-10"]["verdict"] == "no"
    assert "no D, beta 0.55 (sub-diffusive)" in beta["CPE-10"]["ours"]
    # the D ordering is decisive in the numbers (2e-6 vs ~2e-7) but rests on failed checks: withheld
    d_row = [r for r in rows if r["id"] == "D_Na_composite_gt_plain"][0]
    assert d_row["difference"] > 2 * d_row["sigma_combined"]
    assert d_row["verdict"] == "inconclusive" and "verdict withheld (was yes)" in d_row["note"]
    assert "CPE-10: na_msd_diffusive" in d_row["note"] and "PEO: density_plateau" in d_row["note"]


def test_cli_writes_the_outputs_the_rule_declares(tmp_path):
    paths = _two_systems(tmp_path)
    parser = argparse.ArgumentParser()
    add_study_parser(parser.add_subparsers(dest="command"))
    cfg = {"systems": {"PEO": {"eo_per_chain": 10, "eo_per_na": 20, "chains": 12, "mof_wt_percent": 0},
                       "CPE-10": {"eo_per_chain": 10, "eo_per_na": 20, "mof_wt_percent": 10, "mof_metal": "FeNi"}}}
    args = parser.parse_args(["study", "--out", str(tmp_path / "s"), "--config-json", json.dumps(cfg),
                              *map(str, paths)])
    assert args.func(args) == 0
    written = {str(p.relative_to(tmp_path / "s")) for p in (tmp_path / "s").rglob("*") if p.is_file()}
    assert written == set(expected_outputs(cfg["systems"], [353]))
    assert not any(n.startswith("figures/arrhenius") for n in written)


def test_composite_density_reference_uses_the_film_centres_salt_fraction(tmp_path):
    from spemd.analysis.volume import electrolyte_reference_density

    T = 353.0
    rec = transport_record("CPE-10", 0, T, D_Na=2e-6, D_Na_sigma=1e-7)
    rec["electrolyte"] = {"film_centre_salt_mass_fraction_mean": 0.20, "salt_mass_fraction": 0.25}
    p = write_run(tmp_path, "CPE-10", 0, T, rec, wt=10.0, metal="FeNi")
    comp_path = p.parents[2] / "build" / "composition.json"
    comp = json.loads(comp_path.read_text())
    comp["masses_amu"] = {"salt": 25.0 * 303.14, "peo": 75.0 * 303.14}  # whole electrolyte: w = 0.25
    comp["counts"]["na"] = 25
    comp_path.write_text(json.dumps(comp))
    md = p.parents[1] / "md" / "equilibrate"
    md.mkdir(parents=True)
    with open(md / "state.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Time (ps)", "Step", "Density (g/mL)", "Electrolyte Density (g/mL)"])
        for i in range(20):
            w.writerow([i * 1.0, i * 250, 1.05, 1.10])
    rows = [r for r in comparison_rows(aggregate(load_runs([p]))) if r["id"] == "density_vs_measured"]
    assert len(rows) == 1 and rows[0]["reference_salt_mass_fraction"] == pytest.approx(0.20)
    ref = electrolyte_reference_density(T, 0.20, 303.14)["density_g_cm3"]
    assert ref < electrolyte_reference_density(T, 0.25, 303.14)["density_g_cm3"]  # less salt, less dense
    assert rows[0]["deviation_percent"] == pytest.approx(100 * (1.10 - ref) / ref, rel=1e-6)
    assert "film centre's salt mass fraction 0.2000" in rows[0]["note"] and "0.2500" in rows[0]["note"]


def _rdf_csv(path, g, n, n_sem):
    r = np.arange(80) * 0.01 + 0.005
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["r (nm)", "g(r)", "n(r)", "g(r) SEM", "g(r) finite-size corrected", "g(r) finite-size corrected SEM",
                    "n(r) SEM"])
        for row in zip(r, g, n, np.full(80, 0.02), g, np.full(80, 0.02), n_sem):
            w.writerow(row)


def test_cn_compared_at_one_radius_from_the_pooled_g_with_ion_and_replica_errors(tmp_path):
    # PEO's own shell was null (as on the default run, where it had been the last bin); CPE-10's at 3.65 A.
    # The study reads both CNs at the pooled g's minimum (3.45 A here), errors from the n(r) SEM column.
    r = np.arange(80) * 0.01 + 0.005
    base = 1 + 5 * np.exp(-((r - 0.25) / 0.02) ** 2) - 0.8 * np.exp(-((r - 0.345) / 0.03) ** 2)
    paths = _two_systems(tmp_path, peo=[dict(D_Na=1e-7, D_Na_sigma=1e-8, cn=4.58)] * 2,
                         cpe=[dict(D_Na=2e-7, D_Na_sigma=1e-8, cn=2.0)])
    slopes = {"PEO": [1.0, 1.1], "CPE-10": [0.8]}
    for p in paths:
        data = json.loads(p.read_text())
        system, rep = data["system"], data["replica"]
        if system == "PEO":
            data["rdf"]["Na-O_TFSI"].update(first_shell_radius_nm=None, first_shell_radius_A=None, first_shell_cn=None,
                                            first_shell_reason="g(r) does not rise significantly")
        else:
            data["rdf"]["Na-O_TFSI"].update(first_shell_radius_nm=0.365, first_shell_radius_A=3.65)
        p.write_text(json.dumps(data))
        k = slopes[system][rep]
        _rdf_csv(p.parent / "rdf_Na-O_TFSI.csv", base + (0.02 if system == "PEO" else -0.02), k * 10 * r,
                 0.05 * k * 10 * r)
    agg = aggregate(load_runs(paths))
    sh = agg["common_shell"]["353"]
    assert sh["radius_A"] == pytest.approx(3.45) and sh["reason"] is None and "pooled g(r) of 3 run(s)" in sh["source"]
    rc_edge = 3.45  # n(r) is at the upper edge: r + 0.005 nm, so n(r_c) = k * 10 * (r_c - 0.005)
    n_peo = [k * 10 * (0.345 - 0.005) for k in (1.0, 1.1)]
    s_peo = [0.05 * v for v in n_peo]
    w = 1 / np.square(s_peo)
    mean = float(np.sum(w * n_peo) / np.sum(w))
    birge = math.sqrt(float(np.sum(w * (np.array(n_peo) - mean) ** 2)))  # n - 1 = 1
    peo = agg["points"][("PEO", 353.0)]["cn_NaO_TFSI_common"]
    assert peo["mean"] == pytest.approx(mean) and peo["sigma"] == pytest.approx(max(1, birge) / math.sqrt(w.sum()))
    cpe = agg["points"][("CPE-10", 353.0)]["cn_NaO_TFSI_common"]
    assert cpe["mean"] == pytest.approx(0.8 * 10 * 0.34) and cpe["sigma"] == pytest.approx(0.05 * 0.8 * 10 * 0.34)
    row = _row(comparison_rows(agg), "cn_NaO_TFSI_weaker_with_MOF")
    assert row["difference"] == pytest.approx(peo["mean"] - cpe["mean"])
    assert row["sigma_combined"] == pytest.approx(math.hypot(peo["sigma"], cpe["sigma"]))
    assert row["verdict"] == "yes" and f"r_c = {rc_edge:.3g} Å" in row["note"]
    # the shells and why one is null are in aggregated.csv
    table = list(csv.DictReader(io.StringIO(aggregated_csv(agg))))
    peo_row = [t for t in table if t["system"] == "PEO"][0]
    assert peo_row["NaO_TFSI_shell_radius_A"] == "" and "does not rise" in peo_row["NaO_TFSI_shell_why_null"]
    assert float(peo_row["NaO_TFSI_common_shell_radius_A"]) == pytest.approx(3.45)

    # a pooled g without a minimum inside 2.8-4.0 A: no common radius, the verdict withheld with the reason
    for p in paths:
        _rdf_csv(p.parent / "rdf_Na-O_TFSI.csv", 1 + 5 * np.exp(-((r - 0.25) / 0.02) ** 2) + 0.3 * (r > 0.3) * (0.5 - r),
                 10 * r, 0.5 * r)
    rows = comparison_rows(aggregate(load_runs(paths)))
    row = _row(rows, "cn_NaO_TFSI_weaker_with_MOF")
    assert row["verdict"] == "not available" and "no common first shell" in row["ours"]
    assert "made-up radius" in row["note"]


def test_config_shell_radius_is_the_common_radius(tmp_path):
    paths = _two_systems(tmp_path)
    for p in paths:
        data = json.loads(p.read_text())
        data["rdf"]["Na-O_TFSI"].update(first_shell_radius_nm=0.35, first_shell_radius_A=3.5,
                                        first_shell_source="config analysis.shell_radius_nm")
        p.write_text(json.dumps(data))
    sh = aggregate(load_runs(paths))["common_shell"]["353"]
    assert sh["radius_nm"] == 0.35 and sh["source"] == "config analysis.shell_radius_nm"
