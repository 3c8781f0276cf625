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
    # pretend a CUDA plugin is listed: probing it fails here, and auto must fall back to CPU
    real = platforms.available_platforms()
    monkeypatch.setattr(platforms, "available_platforms", lambda: ["CUDA"] + real)
    monkeypatch.setenv("OPENMM_CPU_THREADS", "1")
    platform, _, _ = platforms.select_platform({})
    assert platform.getName() == "CPU"


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
