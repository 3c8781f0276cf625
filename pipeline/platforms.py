"""Choose the OpenMM platform a simulation runs on.

``choose_platform(platform_cfg, system_xml, positions, box)`` turns the ``platform`` section of the
configuration into an ``openmm.Platform``, the properties to create a Context with, a one-line
description (platform, device, precision, threads) that goes into the log and into every ``done.json``,
and the record of what was probed and skipped (``done.json``'s ``platform_choice``).

* ``auto`` tries CUDA, then OpenCL, then CPU. A candidate counts only if a tiny Context can actually
  be created on it (a CUDA plugin that loads on a node without a driver is skipped) and, for CUDA and
  OpenCL, if it passes the child-process probe on the run's own System (:mod:`spemd.pipeline.probe`:
  energy and forces against CPU, a few minimiser iterations, a few MD steps; cached per machine and
  System). A skipped candidate gets one warning line with the reason.
* An explicit name that is unavailable is a :class:`SimulationError` listing the available platforms
  (:func:`check_requested_platform` makes it a ConfigError before any job); an explicit CUDA or OpenCL
  that fails the probe is a SimulationError naming the platform and the reason.
* GPU precision comes from ``precision`` (mixed by default). ``device_index: null`` sets no
  ``DeviceIndex`` property, so the platform picks its default device, which under Slurm or on a
  workstation is the first one in ``CUDA_VISIBLE_DEVICES``.
* CPU threads: ``OPENMM_CPU_THREADS``, else ``SLURM_CPUS_PER_TASK``, else OpenMM's default.
* Growing CPU threads while a stage runs (:class:`IdleCoreWidening`): up to ``SPEMD_MD_MAX_THREADS``
  (unset: never), one step at a time, onto CPUs that stayed idle over a whole window of at least
  ``WIDEN_WINDOW_S`` seconds. The workflow sets it to ``--cores`` on local execution, so that once the
  other simulations have finished, the last one takes the cores they left; a core that other jobs use
  even briefly within the window is not idle, and a cluster job is never widened.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import openmm

from spemd.cpu_load import cpu_ticks, idle_cpus_between
from spemd.errors import ConfigError, SimulationError, one_of

log = logging.getLogger(__name__)

PLATFORM_NAMES = ("auto", "CUDA", "OpenCL", "CPU", "Reference")
PRECISIONS = ("mixed", "single", "double")
AUTO_ORDER = ("CUDA", "OpenCL", "CPU")
GPU_PLATFORMS = ("CUDA", "OpenCL")
DEFAULTS = {"name": "auto", "device_index": None, "precision": "mixed"}
#: shortest window over which a CPU must have stayed idle before a running stage takes it
WIDEN_WINDOW_S = 5.0


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms whose plugins loaded."""
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def _threads_from_env(var: str) -> int | None:
    """A thread count from environment variable `var`; None when unset or empty, ConfigError when bad."""
    value = os.environ.get(var)
    if value is None or value.strip() == "":
        return None
    try:
        threads = int(value)
    except ValueError:
        raise ConfigError(f"{var}: {value!r} is not a whole number of threads") from None
    if threads < 1:
        raise ConfigError(f"{var}: {value!r} is out of range; must be >= 1")
    return threads


def cpu_threads() -> int | None:
    """CPU thread count from OPENMM_CPU_THREADS, else SLURM_CPUS_PER_TASK, else None (OpenMM decides)."""
    for var in ("OPENMM_CPU_THREADS", "SLURM_CPUS_PER_TASK"):
        threads = _threads_from_env(var)
        if threads is not None:
            return threads
    return None


def max_cpu_threads() -> int | None:
    """Threads a running CPU stage may grow to (SPEMD_MD_MAX_THREADS); None when unset (no growing)."""
    return _threads_from_env("SPEMD_MD_MAX_THREADS")


class IdleCoreWidening:
    """Decides when a running CPU stage takes more threads (module docstring).

    ``propose()`` is called at the stage's frame boundaries; it returns the new thread count, or None.
    Each call that closes a window of >= `window_s` starts the next one, so a CPU counts as free only if
    it stayed idle through one whole recent window. The stage's own threads are busy, hence not idle.
    """

    def __init__(self, threads: int, max_threads: int, window_s: float | None = None):
        self.threads = int(threads)
        self.max_threads = int(max_threads)
        self.window_s = WIDEN_WINDOW_S if window_s is None else float(window_s)
        self._start, self._ticks = time.monotonic(), cpu_ticks()

    def propose(self) -> int | None:
        if self.threads >= self.max_threads:
            return None
        now = time.monotonic()
        if now - self._start < self.window_s:
            return None
        ticks = cpu_ticks()
        idle = idle_cpus_between(self._ticks, ticks)
        self._start, self._ticks = now, ticks
        free = int(idle + 0.25) if idle is not None else 0  # a CPU idle >= 75 % of the window
        if free < 1:
            return None
        self.threads = min(self.max_threads, self.threads + free)
        return self.threads


def platform_properties(name: str, device_index: int | None, precision: str) -> dict[str, str]:
    """Context properties for one platform (all values strings, as OpenMM wants them)."""
    props: dict[str, str] = {}
    if name in GPU_PLATFORMS:
        props["Precision"] = precision
        if device_index is None:  # the card pipeline.gpus.claim_gpu pinned, if any
            device_index = os.environ.get("SPEMD_DEVICE_INDEX")
        if device_index is not None:
            props["DeviceIndex"] = str(int(device_index))
    elif name == "CPU":
        threads = cpu_threads()
        if threads is not None:
            props["Threads"] = str(threads)
    return props


def _probe(name: str, props: dict[str, str]):
    """Create a one-particle Context on `name`; return (platform, description) or raise an Exception."""
    platform = openmm.Platform.getPlatformByName(name)
    system = openmm.System()
    system.addParticle(1.0)
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, platform, props)
    try:
        context.setPositions([openmm.Vec3(0, 0, 0)])
        integrator.step(1)
        return platform, describe_context(context)
    finally:
        del context, integrator


def describe_context(context: openmm.Context) -> str:
    """'CUDA device 0 (NVIDIA H100), mixed precision' / 'CPU, 8 threads' / 'Reference, double precision'."""
    platform = context.getPlatform()
    name = platform.getName()

    def prop(key):
        try:
            return platform.getPropertyValue(context, key)
        except Exception:  # the property does not exist on this platform
            return None

    if name in GPU_PLATFORMS:
        index, device = prop("DeviceIndex"), prop("DeviceName")
        return f"{name} device {index} ({device}), {prop('Precision')} precision"
    if name == "CPU":
        return f"CPU, {prop('Threads')} threads"
    return f"{name}, double precision"


def _check_cfg(platform_cfg: dict | None) -> dict:
    cfg = dict(DEFAULTS)
    cfg.update({k: v for k, v in (platform_cfg or {}).items() if v is not None or k == "device_index"})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown key platform.{unknown[0]}; allowed keys here: {', '.join(sorted(DEFAULTS))}")
    if cfg["name"] not in PLATFORM_NAMES:
        raise ConfigError(one_of("platform.name", cfg["name"], PLATFORM_NAMES)
                          + f" (available on this machine: {', '.join(available_platforms())})")
    if cfg["precision"] not in PRECISIONS:
        raise ConfigError(one_of("platform.precision", cfg["precision"], PRECISIONS))
    index = cfg["device_index"]
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
        raise ConfigError(f"platform.device_index: {index!r} is out of range; must be an integer >= 0 or null")
    return cfg


@dataclass
class PlatformChoice:
    """The platform a run uses, with what was probed and skipped on the way (``record()`` goes into done.json)."""

    platform: openmm.Platform
    props: dict[str, str]
    description: str
    requested: str
    probes: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        return {
            "requested": self.requested,
            "chosen": self.platform.getName(),
            "skipped": [{"platform": p["platform"], "reason": p["reason"]} for p in self.probes if not p["passed"]],
            "probes": self.probes,
        }


def choose_platform(platform_cfg: dict | None, system_xml=None, positions_nm=None, box_nm=None,
                    operations=("energy", "md", "minimise")) -> PlatformChoice:
    """Pick and verify a platform for the System in `system_xml` at `positions_nm` in `box_nm`.

    `operations`: what the caller will do on it (probe.OPERATIONS); ``auto`` probes all of them anyway.

    Each candidate must create a tiny Context; a GPU candidate must also pass the child-process probe on
    the run's own System (:mod:`spemd.pipeline.probe`) when `system_xml` is given. CPU and Reference are
    the platforms the probe compares against, so they are not probed. ``auto`` skips a failing candidate
    with one log line; a platform requested by name that fails stops with a SimulationError naming it
    and the reason. ConfigError for a name/precision outside the allowed values.
    """
    cfg = _check_cfg(platform_cfg)
    available = available_platforms()
    if cfg["name"] == "auto":
        candidates = [n for n in AUTO_ORDER if n in available]
    else:
        if cfg["name"] not in available:
            raise SimulationError(unavailable_message(cfg["name"], available))
        candidates = [cfg["name"]]
    failures, probes = [], []
    for name in candidates:
        props = platform_properties(name, cfg["device_index"], cfg["precision"])
        try:
            platform, description = _probe(name, props)
        except Exception as exc:  # OpenMMException: no device, bad device index, driver too old...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            failures.append(f"{name} ({reason})")
            probes.append({"platform": name, "props": props, "passed": False, "reason": f"no Context: {reason}"})
            log.info("platform %s unusable: %s", name, reason)
            continue
        if system_xml is not None and name in GPU_PLATFORMS:
            from spemd.pipeline.probe import OPERATIONS, probe_platform

            result = probe_platform(name, props, system_xml, positions_nm, box_nm,
                                    reference_props=platform_properties("CPU", None, cfg["precision"]),
                                    operations=OPERATIONS if cfg["name"] == "auto" else operations)
            probes.append(result)
            how = "cached" if result["cached"] else f"{result['seconds']:.1f} s"
            if not result["passed"]:
                if cfg["name"] != "auto":
                    raise SimulationError(
                        f"platform.name: {name!r} failed the probe on {system_xml}: {result['reason']}; "
                        f"set platform.name to one of {', '.join(n for n in available if n != name)} or auto"
                    )
                failures.append(f"{name} ({result['reason']})")
                log.warning("platform %s skipped: %s (probe %s)", name, result["reason"], how)
                continue
            log.info("platform %s passed the probe: max force error %.2g of the RMS force (probe %s)",
                     name, result["force_max_rel_err"], how)
        if cfg["name"] == "auto":
            log.info("platform auto -> %s", description)
        else:
            log.info("platform %s", description)
        return PlatformChoice(platform, props, description, cfg["name"], probes)
    if cfg["name"] == "auto":
        raise SimulationError(
            f"platform.name: 'auto' found no working platform among {', '.join(AUTO_ORDER)}; "
            f"failures: {'; '.join(failures) or 'none installed'}; available platforms: {', '.join(available)}"
        )
    raise SimulationError(
        f"platform.name: {cfg['name']!r} failed to create a context ({failures[0]}); "
        f"available platforms: {', '.join(available)}"
    )


def select_platform(platform_cfg: dict | None) -> tuple[openmm.Platform, dict[str, str], str]:
    """``choose_platform`` without a System (tiny-Context check only): ``(platform, properties, description)``."""
    choice = choose_platform(platform_cfg)
    return choice.platform, choice.props, choice.description


def unavailable_message(name: str, available: list[str]) -> str:
    return f"platform.name: {name!r} is not available on this machine; available platforms: {', '.join(available)}"


def check_requested_platform(platform_cfg: dict | None) -> None:
    """Stop early (ConfigError) when the config names a platform this machine lacks; ``auto`` always passes.

    Meant for ``spemd validate`` and the Snakefile on local execution: on a cluster the jobs run on other
    machines, whose platforms this one cannot see.
    """
    cfg = _check_cfg(platform_cfg)
    available = available_platforms()
    if cfg["name"] != "auto" and cfg["name"] not in available:
        raise ConfigError(unavailable_message(cfg["name"], available)
                          + " (checked because the jobs run on this machine; cluster profiles and"
                          " `spemd validate --remote` skip this check)")
