"""Metal-O(TFSI) calibration against adsorption energies (forcefields/calibration.py, spemd calibrate)."""

from __future__ import annotations

import json
import math

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from spemd.forcefields import calibration as cal
from spemd.pipeline.cli import main
from spemd.config import validate_config
from spemd.errors import ConfigError
from spemd.units import KJ_PER_MOL_PER_EV
from spemd.systems import molecules
from spemd.systems.build import _append

FF = {"charge_scale": 0.8}
FAST = {"n_orientations": 1}  # one start per site keeps each E_ads at a few seconds on 2 cores


def test_uncalibrated_fe_adsorption_is_binding_and_finite():
    d = cal.adsorption_energy_details("Fe", FF, **FAST)
    assert math.isfinite(d["e_ads_kj_mol"]) and d["e_ads_kj_mol"] < 0
    assert d["e_ads_eV"] == pytest.approx(d["e_ads_kj_mol"] / KJ_PER_MOL_PER_EV)
    assert d["bound_nm"] == pytest.approx(cal.BOUND_SIGMA_FACTOR * math.sqrt(0.2594 * 0.315))  # geometric sigma
    assert d["best_pose"]["bound"] and d["best_pose"]["o_metal_distance_nm"] <= d["bound_nm"]
    assert d["far_clearance_nm"] >= cal.FAR_CLEARANCE_NM
    assert d["box_nm"][2] - d["slab_thickness_nm"] >= cal.MIN_VACUUM_NM
    # the default (geometric) pair was used: no override applied
    assert d["metal_o_tfsi"] == {}


def test_larger_sigma_binds_less_strongly_along_the_followed_pose():
    # the fitted parameter: a larger metal-O(TFSI) sigma holds the O further out (weaker Coulomb pull)
    start = cal.adsorption_energy_details("Fe", FF, cal.pair_overrides("Fe", sigma_nm=0.30), **FAST)
    pose, e, dist = start["best_tfsi_nm"], [start["e_ads_kj_mol"]], [start["best_pose"]["o_metal_distance_nm"]]
    for sigma in (0.34, 0.38):
        r = cal._followed_energy("Fe", FF, cal.pair_overrides("Fe", sigma_nm=sigma), pose, vacuum_nm=cal.VACUUM_NM, platform="CPU")
        pose = r["tfsi_nm"]
        e.append(r["e_ads_kj_mol"])
        dist.append(r["o_metal_distance_nm"])
        assert r["bound"]
    assert e[0] < e[1] < e[2] and dist[0] < dist[1] < dist[2]


def test_symmetric_slab_leaves_the_vacuum_flat():
    """The slab has no z dipole, so tin-foil PME puts no field into the vacuum: a rigid TFSI- has the same
    energy 0.8 nm apart in z without any slab correction (the polar slab of the old cut gave > 50 kJ/mol)."""
    model = cal._model("Fe", cal.VACUUM_NM)
    system, _ = cal.create_system(model.topology, cal._merged_ff(FF, None))
    mid = model.thickness_nm + (model.box_nm[2] - model.thickness_nm) / 2
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    energies = []
    for dz in (-0.4, 0.4):
        ctx.setPositions(np.vstack([model.slab_nm, model.tfsi_nm + [1.3, 1.3, mid + dz]]))
        energies.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
    assert abs(energies[1] - energies[0]) < 0.5


TARGET_EV = -0.125  # one start: sigma 0.32 nm gives -0.143, 0.34 nm -0.110 eV (from scratch and followed agree there)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A sigma calibration of Fe to a target inside a short sigma range."""
    out = tmp_path_factory.mktemp("cal")
    record = cal.calibrate(
        "Fe", FF, {"targets_eV": {"Fe": TARGET_EV}, "sigma_nm": None}, out,
        parameter="sigma_nm", value_range=(0.32, 0.34), grid_points=2, **FAST,
    )  # fmt: skip
    return out / "calibration.json", record


def test_calibration_reproduces_its_target_independently(calibrated):
    path, record = calibrated
    data = json.loads(path.read_text())
    assert data["metal"] == "Fe" and data["target_eV"] == TARGET_EV
    assert abs(data["achieved_eV"] - TARGET_EV) <= cal.TARGET_TOLERANCE_EV
    assert data["fitted_parameter"] == "sigma_nm" and data["fit"]["parameter"] == "sigma_nm"
    fitted = data["fitted"]["Fe"]
    assert 0.32 < fitted["sigma_nm"] < 0.34
    assert fitted["epsilon_kj_mol"] == pytest.approx(math.sqrt(0.0544 * 0.83736))  # geometric epsilon, fixed
    assert data["fit"]["brentq_iterations"] >= 1 and "provenance" in data
    assert data["uncalibrated"]["e_ads_eV"] < TARGET_EV  # the fit weakened the binding
    assert abs(data["fit"]["followed_e_ads_eV"] - TARGET_EV) <= cal.TARGET_TOLERANCE_EV
    # fresh system, override through create_system's metal_o_tfsi path
    again = cal.adsorption_energy_kj_mol("Fe", {**FF, "metal_o_tfsi": {"Fe": fitted}}, **FAST)
    assert abs(again / KJ_PER_MOL_PER_EV - TARGET_EV) <= 0.01


def test_fit_parameter_follows_the_uncalibrated_binding(monkeypatch, tmp_path):
    """Geometric pair binds more strongly than the target: sigma is fitted upwards from the geometric
    sigma; less strongly: epsilon upwards from the geometric epsilon (sigma geometric)."""
    seen = {}

    class Stop(Exception):
        pass

    def fake_fit(metal, ff, target, **kwargs):
        seen[metal] = kwargs
        raise Stop

    monkeypatch.setattr(cal, "adsorption_energy_details", lambda *a, **k: {"e_ads_eV": -0.37})
    monkeypatch.setattr(cal, "fit_pair", fake_fit)
    for metal in ("Fe", "Ni", "FeNi"):
        with pytest.raises(Stop):
            cal.calibrate(metal, FF, {}, tmp_path)  # default targets: Fe -0.27, Ni -0.55, FeNi -0.70
    assert seen["Fe"]["parameter"] == "sigma_nm"
    assert seen["Fe"]["value_range"] == (pytest.approx(math.sqrt(0.2594 * 0.315)), cal.SIGMA_RANGE_NM[1])
    assert seen["Ni"]["parameter"] == seen["FeNi"]["parameter"] == "epsilon_kj_mol"
    assert seen["Ni"]["value_range"] == (pytest.approx(math.sqrt(0.0628 * 0.83736)), cal.EPSILON_RANGE_KJ_MOL[1])
    # FeNi: one epsilon for both pairs, starting from the weaker (smaller) geometric epsilon
    assert seen["FeNi"]["value_range"][0] == pytest.approx(math.sqrt(0.0544 * 0.83736))
    assert cal.DEFAULT_TARGETS_EV == {"Fe": -0.27, "Ni": -0.55, "FeNi": -0.70}


def test_unreachable_target_names_the_range(tmp_path):
    with pytest.raises(ConfigError, match=r"calibration\.targets_eV\.Fe: -3 eV cannot be reached .*sigma_nm in \[0\.3, 0\.35\] nm"):
        cal.calibrate("Fe", FF, {"targets_eV": {"Fe": -3.0}}, tmp_path, parameter="sigma_nm", value_range=(0.3, 0.35), grid_points=2, **FAST)
    assert not (tmp_path / "calibration.json").exists()
    # calibration.sigma_nm given: epsilon is fitted instead
    with pytest.raises(ConfigError, match=r"-3 eV cannot be reached .*epsilon_kj_mol in \[0\.5, 5\] kJ/mol"):
        cal.fit_pair("Fe", FF, -3.0 * KJ_PER_MOL_PER_EV, sigma_nm=0.3, value_range=(0.5, 5.0), grid_points=2, **FAST)
    with pytest.raises(ConfigError, match=r"calibration parameter: 'C4' is not allowed"):
        cal.fit_pair("Fe", FF, -0.27 * KJ_PER_MOL_PER_EV, parameter="C4")


def test_sigma_range_must_fit_inside_the_cutoff():
    with pytest.raises(ConfigError, match=r"forcefield\.nonbonded_cutoff_nm: 1\.0 does not hold"):
        cal.fit_pair("Fe", {**FF, "nonbonded_cutoff_nm": 1.0}, -100.0, value_range=(0.3, 0.95), **FAST)


def _config(**calibration):
    return {
        "systems": {"CPE": {"eo_per_chain": 10, "eo_per_na": 20, "mof_wt_percent": 30, "mof_metal": "FeNi"}},
        "temperatures_K": [353],
        "protocol": {"stages": [{"name": "p", "ensemble": "NVT", "time_ps": 1}]},
        "calibration": calibration,
    }


def test_fe_ni_target_has_a_documented_default():
    defaults = {"Fe": -0.27, "Ni": -0.55, "FeNi": -0.7}
    assert validate_config(_config(enabled=True))["calibration"]["targets_eV"] == defaults
    ok = validate_config(_config(enabled=True, targets_eV={"FeNi": -0.9}))
    assert ok["calibration"]["targets_eV"] == defaults | {"FeNi": -0.9}
    assert validate_config(_config())["calibration"] == {"enabled": False, "targets_eV": defaults, "sigma_nm": None}
    with pytest.raises(ConfigError, match=r"calibration\.targets_eV\.FeNi: 0\.1 is out of range"):
        validate_config(_config(enabled=True, targets_eV={"FeNi": 0.1}))


def test_parametrise_calibration_merges_fitted_pair(tmp_path):
    # calibration.json layout as cal.calibrate writes it (only the keys the merge reads)
    record = {"metal": "Fe", "target_eV": -0.27, "achieved_eV": -0.2712,
              "fitted": {"Fe": {"sigma_nm": 0.2858, "epsilon_kj_mol": 7.25}}}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(record))
    top = app.Topology()
    xyz = []
    for k, mol in enumerate([molecules.sodium(), molecules.tfsi()]):
        _append(top, mol.topology)
        xyz.append(mol.positions_nm + [1.0 + k * 1.0, 1.5, 1.5])
    top.setPeriodicBoxVectors(np.eye(3) * 3.0 * u.nanometer)
    box = tmp_path / "box.pdb"
    with open(box, "w") as fh:
        app.PDBFile.writeFile(top, np.vstack(xyz) * u.nanometer, fh)
    cfg = json.dumps({"forcefield": {"metal_o_tfsi": {"Ni": {"sigma_nm": 0.3, "epsilon_kj_mol": 0.5}}}})
    out = tmp_path / "params"
    assert main(["parametrise", "--config-json", cfg, "--box", str(box), "--calibration", str(path), "--out", str(out)]) == 0
    ff = json.loads((out / "forcefield.json").read_text())
    fitted = record["fitted"]["Fe"]
    assert ff["metal_o_tfsi"]["Fe"]["epsilon_kj_mol"] == fitted["epsilon_kj_mol"]
    assert ff["metal_o_tfsi"]["Fe"]["sigma_nm"] == fitted["sigma_nm"]
    assert ff["metal_o_tfsi"]["Ni"]["epsilon_kj_mol"] == 0.5  # config overrides of other metals kept
    recorded = ff["provenance"]["config"]["forcefield"]["calibration"]
    assert recorded["metal"] == "Fe" and recorded["target_eV"] == record["target_eV"]
    # a file that is not a calibration is a one-line error
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["parametrise", "--config-json", cfg, "--box", str(box), "--calibration", str(bad), "--out", str(out)]) == 1


def test_screened_mof_charges_weaken_adsorption():
    # on the capped slab Coulomb is only part of the binding (one start: full -0.27, half -0.18 eV, an
    # uncharged host still -0.18 eV of Lennard-Jones physisorption); the old charged cut gave ~0.5 at half
    full = cal.adsorption_energy_details("Fe", FF, **FAST)
    half = cal.adsorption_energy_details("Fe", FF | {"mof_charge_scale": 0.5}, **FAST)
    assert half["mof_charge_scale"] == 0.5 and full["mof_charge_scale"] == 1.0
    assert full["e_ads_kj_mol"] < half["e_ads_kj_mol"] < 0
    ratio = half["e_ads_kj_mol"] / full["e_ads_kj_mol"]
    assert 0.55 < ratio < 0.8, ratio


def test_calibration_fitted_at_another_charge_model_is_refused(tmp_path):
    record = {"metal": "Fe", "target_eV": -0.27, "achieved_eV": -0.27, "charge_scale": 0.8, "mof_charge_scale": 0.3,
              "fitted": {"Fe": {"sigma_nm": 0.45, "epsilon_kj_mol": 0.2}}}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(record))
    from spemd.pipeline.cli import merge_calibration

    merged = merge_calibration({"charge_scale": 0.8, "mof_charge_scale": 0.3}, path)
    assert merged["metal_o_tfsi"]["Fe"]["sigma_nm"] == 0.45 and merged["calibration"]["mof_charge_scale"] == 0.3
    with pytest.raises(ConfigError, match=r"forcefield\.mof_charge_scale: 1\.0 differs from 0\.3"):
        merge_calibration({"charge_scale": 0.8}, path)
    with pytest.raises(ConfigError, match=r"forcefield\.charge_scale: 0\.7 differs from 0\.8"):
        merge_calibration({"charge_scale": 0.7, "mof_charge_scale": 0.3}, path)
