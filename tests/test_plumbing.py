"""Shared plumbing: unit conversions, atomic writes, provenance."""

import json
import os

import pytest

from spemd import units
from spemd.files import atomic_path, write_json_atomic
from spemd.provenance import provenance, sha256_file


def test_diffusivity_conversion():
    # 1 nm^2/ps = 1e-14 cm^2 / 1e-12 s = 1e-2 cm^2/s
    assert units.nm2_per_ps_to_cm2_per_s(1.0) == pytest.approx(1e-2)
    assert units.cm2_per_s_to_nm2_per_ps(2.12e-6) == pytest.approx(2.12e-4)


def test_density_roundtrip():
    # water: 18.015 amu per 0.0299 nm^3 is ~1.0 g/cm^3
    assert units.density_g_per_cm3(18.015, 0.029915) == pytest.approx(1.0, rel=1e-3)
    v = units.volume_nm3_for_density(1000.0, 0.9)
    assert units.density_g_per_cm3(1000.0, v) == pytest.approx(0.9)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_provenance_records_hashes_and_versions(tmp_path):
    ff = tmp_path / "ff.xml"
    ff.write_text("<ForceField/>")
    rec = provenance(seed=7, config={"a": 1}, forcefield_files=[ff])
    assert rec["seed"] == 7
    assert rec["forcefield_files"]["ff.xml"] == sha256_file(ff)
    assert len(rec["forcefield_files"]["ff.xml"]) == 64
    assert rec["packages"]["openmm"]
    write_json_atomic(tmp_path / "p.json", rec)
    assert json.loads((tmp_path / "p.json").read_text())["config"] == {"a": 1}
