"""One simulation per GPU on a workstation: claim a free device, pin the process to it.

Snakemake's global resource ``gpu`` (``--resources gpu=N``) limits how many GPU jobs run at once, but
it does not say *which* card a job should use. :func:`claim_gpu` does: each GPU job takes an exclusive
``flock`` on ``<lock_dir>/gpu-<device>.lock`` for the first free device and sets
``CUDA_VISIBLE_DEVICES`` to that device for the rest of the process, so OpenMM sees exactly one card
(device index 0 inside the process). When every device is taken the call waits (queues) until one is
released. The kernel releases a ``flock`` when its holder exits or is killed, so a crashed or killed
job never leaves a stale claim behind.

Under Slurm the scheduler already gives every job its own GPU(s) and sets ``CUDA_VISIBLE_DEVICES``;
there :func:`claim_gpu` takes no lock and keeps Slurm's choice (locks keyed on device numbers would be
wrong anyway where Slurm renumbers the devices of each job from 0).

Which devices exist, in order of precedence:

1. the ``devices`` argument (tests, or a caller that knows better);
2. ``SPEMD_GPUS`` (comma-separated device ids or UUIDs): an explicit list for this machine;
3. ``CUDA_VISIBLE_DEVICES`` as inherited by the Snakemake process (``""`` or ``-1``: no GPU);
4. ``nvidia-smi --query-gpu=index``;
5. none: :func:`claim_gpu` yields ``None`` and leaves the environment alone (CPU/OpenCL run).

Call :func:`claim_gpu` before the first OpenMM ``Context`` is created: CUDA reads
``CUDA_VISIBLE_DEVICES`` once, when it initialises in the process.

    with claim_gpu() as device:       # "1", or None without GPUs
        run_stage(...)                # OpenMM CUDA DeviceIndex is then 0 (the only visible card)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, MutableMapping, Sequence

from spemd.errors import ConfigError, SimulationError

ENV_DEVICES = "SPEMD_GPUS"
ENV_LOCK_DIR = "SPEMD_GPU_LOCK_DIR"
ENV_TIMEOUT = "SPEMD_GPU_WAIT_SECONDS"
#: the claimed card's OpenMM DeviceIndex, read by pipeline.platforms (the pin does not rely on the
#: environment alone: CUDA ignores a CUDA_VISIBLE_DEVICES set after it initialised)
ENV_DEVICE_INDEX = "SPEMD_DEVICE_INDEX"


def default_lock_dir() -> Path:
    """``$SPEMD_GPU_LOCK_DIR``, else ``<tmp>/spemd-gpu-locks`` (one per machine, shared by users)."""
    explicit = os.environ.get(ENV_LOCK_DIR)
    if explicit:
        return Path(explicit)
    return Path(tempfile.gettempdir()) / "spemd-gpu-locks"


def _split_devices(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    devices = []
    for item in items:
        if not item:
            continue
        if item.startswith("-"):
            # CUDA stops enumerating at the first invalid (e.g. negative) id
            break
        devices.append(item)
    return devices


def _nvidia_smi_devices() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def visible_devices(environ: MutableMapping[str, str] | None = None, probe: bool = True) -> list[str]:
    """The GPU device ids this machine offers to the workflow (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_DEVICES, "").strip():
        return _split_devices(env[ENV_DEVICES])
    if "CUDA_VISIBLE_DEVICES" in env:
        return _split_devices(env["CUDA_VISIBLE_DEVICES"])
    return _nvidia_smi_devices() if probe else []


def count_gpus(environ: MutableMapping[str, str] | None = None) -> int:
    """Number of GPUs :func:`claim_gpu` can hand out here (the natural ``--resources gpu=N``)."""
    return len(visible_devices(environ))


def in_slurm_gpu_job(environ: MutableMapping[str, str] | None = None) -> bool:
    """True inside a Slurm job that was allocated GPUs (Slurm then sets CUDA_VISIBLE_DEVICES)."""
    env = os.environ if environ is None else environ
    if not env.get("SLURM_JOB_ID"):
        return False
    return any(env.get(key) for key in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE")) \
        or bool(env.get("CUDA_VISIBLE_DEVICES", "").strip())


def _lock_name(device: str) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock"


def _try_lock(path: Path) -> int | None:
    """Open `path` and take an exclusive non-blocking flock; return the fd, or None if it is held."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)  # another user's jobs must be able to lock it too
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)  # created by another user; flock works on a read-only fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    # who holds it, for people looking at the lock directory (informational only)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} pid {os.getpid()} since {time.ctime()}\n".encode())
    return fd


def wait_seconds(text: str) -> float:
    """$SPEMD_GPU_WAIT_SECONDS as seconds; ConfigError naming the variable if it is not a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # also rejects nan
        raise ConfigError(f"{ENV_TIMEOUT}: {text!r} is not allowed; allowed values: a number of seconds >= 0, or unset (wait forever)")
    return value


@contextlib.contextmanager
def claim_gpu(
    devices: Sequence[str] | None = None,
    lock_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
    poll_seconds: float = 1.0,
    environ: MutableMapping[str, str] | None = None,
    log=None,
) -> Iterator[str | None]:
    """Hold one GPU for the duration of the block; yield its device id (``None`` without GPUs).

    Sets ``CUDA_VISIBLE_DEVICES`` in `environ` (default ``os.environ``) to the claimed device for the
    block and restores the previous value afterwards. Waits while all devices are claimed, up to
    `timeout` seconds (default ``$SPEMD_GPU_WAIT_SECONDS``, else forever), then raises
    :class:`~spemd.errors.SimulationError`.
    """
    env = os.environ if environ is None else environ
    say = log if log is not None else (lambda msg: print(f"[spemd.gpus] {msg}", file=sys.stderr, flush=True))
    if timeout is None and env.get(ENV_TIMEOUT):  # checked first: a typo must not wait until GPUs are busy
        timeout = wait_seconds(env[ENV_TIMEOUT])

    candidates = list(devices) if devices is not None else None
    directory = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    if candidates is None and in_slurm_gpu_job(env):
        candidates = _split_devices(env.get("CUDA_VISIBLE_DEVICES", "")) or _split_devices(
            env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS") or "")
        if len(candidates) == 1:
            # the usual case: Slurm allocated this job (step) one GPU of its own
            with _pinned(env, candidates[0]):
                say(f"using GPU {candidates[0]} allocated by Slurm job {env.get('SLURM_JOB_ID')}")
                yield candidates[0]
            return
        if lock_dir is None:
            # several GPUs in one allocation (e.g. Snakemake run inside salloc): share them out
            # with locks private to this job, since Slurm may number each job's devices from 0
            directory = directory / f"slurm-job-{env['SLURM_JOB_ID']}"
    if candidates is None:
        candidates = visible_devices(env)
    if not candidates:
        say("no GPU visible (CUDA_VISIBLE_DEVICES/SPEMD_GPUS/nvidia-smi): running without a GPU claim")
        yield None
        return

    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(directory, 0o1777)  # shared by every user of the machine, like /tmp

    start = time.monotonic()
    waited = False
    while True:
        for device in candidates:
            fd = _try_lock(directory / _lock_name(device))
            if fd is None:
                continue
            try:
                if waited:
                    say(f"GPU {device} free after {time.monotonic() - start:.0f} s")
                with _pinned(env, device):
                    yield device
            finally:
                os.close(fd)  # closing the only descriptor releases the flock
            return
        if not waited:
            say(f"all {len(candidates)} GPU(s) {','.join(candidates)} are busy; waiting for one "
                f"(locks in {directory})")
            waited = True
        if timeout is not None and time.monotonic() - start >= timeout:
            raise SimulationError(
                f"{ENV_TIMEOUT}: no GPU of {','.join(candidates)} became free within {timeout:g} s "
                f"(locks in {directory})"
            )
        time.sleep(poll_seconds)


def _device_index(previous: str | None, device: str) -> str:
    """OpenMM's index of `device`: 0 if OpenMM loads after the pin, else its place among the devices it saw."""
    if "openmm" not in sys.modules:
        return "0"
    seen = _split_devices(previous) if previous is not None else []
    if device in seen:
        return str(seen.index(device))
    return device if device.isdigit() else "0"


@contextlib.contextmanager
def _pinned(env: MutableMapping[str, str], device: str):
    previous = env.get("CUDA_VISIBLE_DEVICES")
    previous_index = env.get(ENV_DEVICE_INDEX)
    env[ENV_DEVICE_INDEX] = _device_index(previous, device)
    env["CUDA_VISIBLE_DEVICES"] = device
    try:
        yield
    finally:
        for key, value in (("CUDA_VISIBLE_DEVICES", previous), (ENV_DEVICE_INDEX, previous_index)):
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spemd.pipeline.gpus``: print what this machine offers (for docs/running.md)."""
    devices = visible_devices()
    print(f"devices: {','.join(devices) or '(none)'}")
    print(f"count: {len(devices)}")
    print(f"lock dir: {default_lock_dir()}")
    print(f"inside a Slurm GPU job: {in_slurm_gpu_job()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
