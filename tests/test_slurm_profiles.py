"""The Snakemake profiles parse, and give GPU rules one GPU and CPU rules none (no cluster needed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
GPU_RULES = ("minimise", "md_stage")


def load(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["workstation", "slurm", "slurm-test"])
def test_profile_gives_gpu_rules_one_gpu(name):
    profile = load(name)
    for rule in GPU_RULES:
        assert profile["set-resources"][rule]["gpu"] == 1
    assert profile["retries"] >= 1  # exit 75 (stopped before the wall-time limit) is resumed by a retry


def test_workstation_profile_runs_locally():
    profile = load("workstation")
    assert "executor" not in profile
    assert "gpu" not in profile.get("resources", {})  # the workflow counts the GPUs (pipeline.gpus)


@pytest.mark.parametrize("name", ["slurm", "slurm-test"])
def test_slurm_profiles(name):
    profile = load(name)
    assert profile["executor"] == "slurm"
    defaults = profile["default-resources"]
    for key in ("gpu", "cpus_per_gpu", "runtime", "mem_mb", "slurm_partition", "slurm_account"):
        assert key in defaults, key
    assert defaults["gpu"] == 0  # CPU-only rules ask for no GPU
    assert "gpu_model" not in defaults  # a GPU type on CPU-only jobs breaks their job steps
    assert "gpu_model" in profile["set-resources"]["md_stage"]


def runtime_minutes(expression: str, attempt: int) -> int:
    return eval(expression, {"attempt": attempt})  # as Snakemake evaluates resource expressions


def test_slurm_runtime_grows_per_attempt():
    expr = load("slurm")["default-resources"]["runtime"]
    minutes = [runtime_minutes(expr, a) for a in range(1, 8)]
    assert minutes == [120, 240, 480, 960, 1440, 1440, 1440]


def test_slurm_test_profile_suits_the_ci_cluster():
    profile = load("slurm-test")
    assert profile["slurm-status-command"] == "squeue"  # no accounting on the CI cluster: no sacct
    assert profile["default-resources"]["slurm_partition"] == "debug"
    assert profile["set-resources"]["md_stage"]["gpu_model"] == "fakegpu"  # ci/slurm/start.sh's GRES type
    start = (ROOT / "ci" / "slurm" / "start.sh").read_text()
    assert "GPU_TYPE=fakegpu" in start and "PartitionName=debug" in start
    min_job_age = int(re.search(r"MinJobAge=(\d+)", start).group(1))
    assert min_job_age >= 3 * profile["slurm-init-seconds-before-status-checks"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["workstation", "slurm", "slurm-test"])
def test_profile_dry_run_on_fixture(name, tmp_path):
    if name != "workstation":
        pytest.importorskip("snakemake_executor_plugin_slurm")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SPEMD_GPUS"] = "0,1"
    out = subprocess.run(
        [str(SNAKEMAKE), "-n", "--profile", str(PROFILES / name), "-s", str(ROOT / "tests/slurm/Snakefile"),
         "--directory", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout + out.stderr
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", text)
    resources = {}
    for block in blocks:
        m = re.match(r"(?:local)?rule (\w+):", block)
        r = re.search(r"resources: (.*)", block)
        if m and r:
            resources[m.group(1)] = r.group(1)
    for rule in GPU_RULES:
        assert "gpu=1" in resources[rule], resources
    if name != "workstation":
        assert "gpu=0" in resources["build"], resources
        assert "runtime=" in resources["md_stage"]
    if name == "slurm":
        assert "runtime=120" in resources["md_stage"] and "slurm_partition=gpu" in resources["md_stage"]
