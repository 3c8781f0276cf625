"""Config validation: every invalid value stops with one line naming the key and the allowed values."""

import copy
from pathlib import Path

import pytest
import yaml

from spemd.config import load_config, replica_seed, validate_config, validate_sections
from spemd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def with_change(path, value):
    cfg = copy.deepcopy(DEFAULT)
    node = cfg
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return cfg


def test_default_config_is_valid_and_gets_defaults():
    cfg = load_config(ROOT / "config" / "config.yaml")
    assert cfg["platform"] == {"name": "auto", "device_index": None, "precision": "mixed"}
    assert cfg["forcefield"]["charge_scale"] == 0.8
    assert cfg["systems"]["CPE"]["mof_metal"] == "FeNi"
    # defaults fill array items too
    assert cfg["protocol"]["stages"][0]["state_interval_ps"] == 1.0


def test_paper_config_is_valid():
    paper = ROOT / "config" / "paper.yaml"
    if paper.exists():
        load_config(paper)


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("systems", "CPE", "mof_wt_percent"), -1, "systems.CPE.mof_wt_percent: -1 is out of range; must be >= 0"),
        (("systems", "CPE", "mof_wt_percent"), 55, "systems.CPE.mof_wt_percent: 55 is out of range; must be < 50"),
        (("systems", "PEO", "eo_per_na"), 0, "systems.PEO.eo_per_na: 0 is out of range; must be > 0"),
        (("systems", "CPE", "mof_metal"), "Co", "systems.CPE.mof_metal: 'Co' is not allowed; allowed values: 'FeNi', 'Fe', 'Ni', 'Cu'"),
        (("temperatures_K",), [300, 0], "temperatures_K.1: 0 is out of range; must be > 0"),
        (("platform", "name"), "Metal", "platform.name: 'Metal' is not allowed; allowed values: 'auto', 'CUDA', 'OpenCL', 'CPU', 'Reference'"),
        (("systems", "PEO", "eo_per_chain"), 1, "systems.PEO.eo_per_chain: 1 is out of range; must be >= 2"),
    ],
)
def test_invalid_values_name_key_and_allowed(path, value, expected):
    with pytest.raises(ConfigError) as err:
        validate_config(with_change(path, value))
    assert str(err.value) == expected


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match=r"^unknown key forcefield\.chrage_scale; allowed keys here: .*charge_scale"):
        validate_config(with_change(("forcefield", "chrage_scale"), 0.8))


def test_timestep_above_limit_needs_hmr():
    cfg = with_change(("forcefield", "hydrogen_mass_amu"), None)
    with pytest.raises(ConfigError, match=r"^protocol.timestep_fs: 4.0 fs needs hydrogen mass repartitioning"):
        validate_config(cfg)
    cfg["protocol"]["timestep_fs"] = 2.0
    validate_config(cfg)


def test_plain_box_needs_chains():
    cfg = copy.deepcopy(DEFAULT)
    del cfg["systems"]["PEO"]["chains"]
    with pytest.raises(ConfigError, match=r"^systems.PEO.chains: required when mof_wt_percent is 0"):
        validate_config(cfg)


def test_snakemake_style_strings_are_coerced():
    # `snakemake --config temperatures_K=[300]` delivers strings
    cfg = with_change(("temperatures_K",), ["300", "320.5"])
    cfg["platform"] = "CPU"
    out = validate_config(cfg)
    assert out["temperatures_K"] == [300.0, 320.5]
    assert out["platform"]["name"] == "CPU"


def test_sections_validate_independently():
    out = validate_sections({"forcefield": {"charge_scale": 1.0}})
    assert out == {"forcefield": {**out["forcefield"], "charge_scale": 1.0}}
    assert out["forcefield"]["nonbonded_cutoff_nm"] == 1.0
    with pytest.raises(ConfigError, match=r"^forcefield.charge_scale: 1.5 is out of range; must be <= 1"):
        validate_sections({"forcefield": {"charge_scale": 1.5}})


def test_missing_file_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_replica_seeds_differ():
    cfg = validate_config(DEFAULT)
    assert len({replica_seed(cfg, r) for r in range(5)}) == 5


def test_stage_temperature_word_run_is_the_run_temperature():
    from spemd.pipeline.cli import resolve_stage_temperature

    assert resolve_stage_temperature({"name": "a", "temperature_K": [500, "run"]}, 353.0)["temperature_K"] == [500, 353.0]
    assert resolve_stage_temperature({"name": "a"}, 300.0)["temperature_K"] == 300.0
    assert resolve_stage_temperature({"name": "a", "temperature_K": 400}, 300.0)["temperature_K"] == 400
