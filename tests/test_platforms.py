"""pipeline.platforms: choice, fallback, properties and error messages."""

import openmm
import pytest

from spemd.pipeline import platforms
from spemd.errors import ConfigError, SimulationError


def test_explicit_cpu_uses_thread_env(monkeypatch):
    monkeypatch.setenv("OPENMM_CPU_THREADS", "1")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    platform, props, description = platforms.select_platform({"name": "CPU"})
    assert platform.getName() == "CPU"
    assert props == {"Threads": "1"}
    assert description == "CPU, 1 threads"


def test_slurm_cpus_used_when_openmm_threads_unset(monkeypatch):
    monkeypatch.delenv("OPENMM_CPU_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert platforms.cpu_threads() == 2
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert platforms.cpu_threads() is None
    assert platforms.platform_properties("CPU", None, "mixed") == {}


def test_bad_thread_env_is_config_error(monkeypatch):
    monkeypatch.setenv("OPENMM_CPU_THREADS", "many")
    with pytest.raises(ConfigError, match="OPENMM_CPU_THREADS"):
        platforms.cpu_threads()


def test_gpu_properties_mixed_by_default_and_device_only_when_given():
    assert platforms.platform_properties("CUDA", None, "mixed") == {"Precision": "mixed"}
    assert platforms.platform_properties("OpenCL", 1, "single") == {"Precision": "single", "DeviceIndex": "1"}
    assert platforms.platform_properties("Reference", 0, "mixed") == {}


def test_auto_picks_first_working_in_order(monkeypatch):
    monkeypatch.setenv("OPENMM_CPU_THREADS", "1")
    platform, _, description = platforms.select_platform({"name": "auto"})
    available = platforms.available_platforms()
    expected = next(n for n in platforms.AUTO_ORDER if n in available)
    assert platform.getName() == expected
    assert platform.getName() != "Reference"
    assert expected in description


def test_auto_skips_a_platform_that_cannot_create_a_context(monkeypatch):
    # pretend a CUDA plugin is listed: probing it fails here, and auto must fall back to the next one
    real = platforms.available_platforms()
    monkeypatch.setattr(platforms, "available_platforms", lambda: ["CUDA"] + real)
    monkeypatch.setenv("OPENMM_CPU_THREADS", "1")
    platform, _, _ = platforms.select_platform({})
    assert platform.getName() == next(n for n in ("OpenCL", "CPU") if n in real)


@pytest.mark.skipif("CUDA" in platforms.available_platforms(), reason="CUDA exists on this machine")
def test_cuda_requested_but_unavailable_lists_available():
    with pytest.raises(SimulationError) as err:
        platforms.select_platform({"name": "CUDA", "device_index": 0, "precision": "mixed"})
    msg = str(err.value)
    assert "platform.name" in msg and "'CUDA'" in msg
    for name in platforms.available_platforms():
        assert name in msg
    assert "\n" not in msg


def test_unknown_platform_name_lists_allowed_and_available():
    with pytest.raises(ConfigError) as err:
        platforms.select_platform({"name": "Metal"})
    msg = str(err.value)
    assert "platform.name" in msg and "'Metal'" in msg
    assert "'OpenCL'" in msg and "available on this machine" in msg
    assert "Reference" in msg


def test_bad_precision_and_device_index():
    with pytest.raises(ConfigError, match="platform.precision.*'double'"):
        platforms.select_platform({"name": "CPU", "precision": "quad"})
    with pytest.raises(ConfigError, match="platform.device_index"):
        platforms.select_platform({"name": "CPU", "device_index": -1})
    with pytest.raises(ConfigError, match="unknown key platform.gpu"):
        platforms.select_platform({"name": "CPU", "gpu": 1})


def test_reference_description():
    platform, props, description = platforms.select_platform({"name": "Reference"})
    assert platform.getName() == "Reference" and props == {}
    assert description.startswith("Reference")
    assert isinstance(platform, openmm.Platform)


def test_idle_core_widening_takes_only_cpus_idle_through_a_whole_window(monkeypatch):
    from spemd.pipeline import platforms

    readings = iter([(0, 0), (100, 200), (190, 400), (380, 600)])  # (idle, total) jiffies
    monkeypatch.setattr(platforms, "cpu_ticks", lambda: next(readings))
    monkeypatch.setattr(platforms.os, "cpu_count", lambda: 4)
    clock = iter([0.0, 1.0, 6.0, 12.0, 18.0])
    monkeypatch.setattr(platforms.time, "monotonic", lambda: next(clock))
    w = platforms.IdleCoreWidening(1, 3, window_s=5.0)  # reads (0, 0) at t = 0
    assert w.propose() is None  # t = 1: the window is not over yet, no reading taken
    assert w.propose() == 3  # t = 6: 4 x 100/200 = 2 CPUs idle -> 1 + 2 threads
    assert w.propose() is None  # at the ceiling: no more readings
    w = platforms.IdleCoreWidening(1, 4, window_s=5.0)  # reads (190, 400) at t = 12
    # t = 18: 4 x 190/200 = 3.8 idle -> 4 threads (capped at 4)
    assert w.propose() == 4


def test_idle_core_widening_ignores_a_cpu_busy_for_part_of_the_window(monkeypatch):
    from spemd.pipeline import platforms

    readings = iter([(0, 0), (60, 200)])  # 2 CPUs, 0.6 idle: another job ran on the second for 40 %
    monkeypatch.setattr(platforms, "cpu_ticks", lambda: next(readings))
    monkeypatch.setattr(platforms.os, "cpu_count", lambda: 2)
    w = platforms.IdleCoreWidening(1, 2, window_s=0.0)
    assert w.propose() is None and w.threads == 1


def test_max_cpu_threads_from_the_environment(monkeypatch):
    from spemd.pipeline.platforms import max_cpu_threads

    monkeypatch.delenv("SPEMD_MD_MAX_THREADS", raising=False)
    assert max_cpu_threads() is None
    monkeypatch.setenv("SPEMD_MD_MAX_THREADS", "4")
    assert max_cpu_threads() == 4
    for bad in ("two", "0"):
        monkeypatch.setenv("SPEMD_MD_MAX_THREADS", bad)
        with pytest.raises(ConfigError, match="SPEMD_MD_MAX_THREADS"):
            max_cpu_threads()


@pytest.mark.skipif("CUDA" in platforms.available_platforms(), reason="CUDA exists on this machine")
def test_validate_and_snakefile_stop_on_a_platform_this_machine_lacks(tmp_path, capsys):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from spemd.pipeline import cli

    root = Path(__file__).resolve().parents[1]
    text = (root / "config" / "config.yaml").read_text().replace("  name: auto", "  name: CUDA")
    assert "name: CUDA" in text
    (tmp_path / "cuda.yaml").write_text(text)
    assert cli.main(["validate", "--config", str(tmp_path / "cuda.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("spemd validate: error: platform.name: 'CUDA' is not available on this machine; available platforms: ")
    assert all(name in err for name in platforms.available_platforms()) and "\n" not in err
    # --remote: the jobs run elsewhere (a cluster profile), which this machine cannot check
    assert cli.main(["validate", "--config", str(tmp_path / "cuda.yaml"), "--remote"]) == 0
    assert "platform CUDA not checked" in capsys.readouterr().out
    # the Snakefile, on local execution, before its first job
    shutil.copytree(root / "config", tmp_path / "wf" / "config")
    out = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-s", str(root / "Snakefile"),
                          "--cores", "1", "--config", "platform=CUDA"], cwd=tmp_path / "wf", capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1
    assert "config error: platform.name: 'CUDA' is not available on this machine" in out.stderr
    assert not (tmp_path / "wf" / "results").exists()


def test_probe_machinery_on_reference_passes_caches_and_reports_a_crash(tmp_path, monkeypatch):
    # the child-process probe (pipeline/probe.py) on any machine: Reference as the candidate, CPU as reference
    from spemd.pipeline.engine import Params
    from spemd.pipeline.probe import ENERGY_REL_TOL, FORCE_REL_TOL, probe_platform
    from spemd.pipeline.testsystems import water_params

    monkeypatch.setenv("SPEMD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENMM_CPU_THREADS", "1")
    p = Params(water_params(tmp_path / "params", box_nm=1.2, cutoff_nm=0.5))
    args = ("Reference", {}, p.system_path, p.positions, p.box)
    first = probe_platform(*args)
    assert first["passed"] and first["reason"] is None and not first["cached"], first
    assert first["operations"] == ["energy", "md", "minimise"] and first["reference"] == "CPU"
    assert 0 < first["force_max_rel_err"] <= FORCE_REL_TOL and first["energy_rel_err"] <= ENERGY_REL_TOL
    again = probe_platform(*args)
    assert again["cached"] and again["force_max_rel_err"] == first["force_max_rel_err"]
    monkeypatch.setenv("SPEMD_PROBE_FAULT", "Reference=segv")
    crashed = probe_platform(*args)
    assert not crashed["passed"] and crashed["reason"] == "crashed with SIGSEGV in the minimiser"
    assert crashed["force_max_rel_err"] == pytest.approx(first["force_max_rel_err"])  # kept from before the crash
    assert probe_platform(*args, operations=("energy", "md"))["passed"]  # no minimiser step: no crash
