"""pipeline.gpus: one simulation per GPU, distinct devices, queueing, no stale claims."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from spemd.pipeline import gpus
from spemd.errors import SimulationError


def quiet(_msg):
    pass


# --- which devices ----------------------------------------------------------------------------------

@pytest.mark.parametrize("env, expected", [
    ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, ["0", "1", "2"]),
    ({"CUDA_VISIBLE_DEVICES": " 2, 3 "}, ["2", "3"]),
    ({"CUDA_VISIBLE_DEVICES": ""}, []),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, []),
    ({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, ["1"]),  # CUDA stops at the first invalid id
    ({"CUDA_VISIBLE_DEVICES": "GPU-8f2a,GPU-77c1"}, ["GPU-8f2a", "GPU-77c1"]),
    ({"SPEMD_GPUS": "4,5", "CUDA_VISIBLE_DEVICES": "0"}, ["4", "5"]),
])
def test_visible_devices_from_environment(env, expected):
    assert gpus.visible_devices(env, probe=False) == expected
    assert gpus.visible_devices(env) == expected  # the environment wins over nvidia-smi


def test_visible_devices_probe_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n3\\n'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpus.visible_devices({}) == ["0", "1", "3"]
    assert gpus.count_gpus({}) == 3
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert gpus.visible_devices({}) == []


# --- claims in one process ------------------------------------------------------------------------

def test_claim_pins_and_restores_environment(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    with gpus.claim_gpu(lock_dir=tmp_path, environ=env, log=quiet) as dev:
        assert dev == "0"
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
        # a second claim (another job) gets the other card
        with gpus.claim_gpu(devices=["0", "1"], lock_dir=tmp_path, environ={}, log=quiet) as dev2:
            assert dev2 == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    # released: the first card is free again
    with gpus.claim_gpu(devices=["0", "1"], lock_dir=tmp_path, environ={}, log=quiet) as dev3:
        assert dev3 == "0"


def test_claim_without_devices_yields_none(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": ""}
    with gpus.claim_gpu(lock_dir=tmp_path, environ=env, log=quiet) as dev:
        assert dev is None
        assert env == {"CUDA_VISIBLE_DEVICES": ""}
    assert list(tmp_path.iterdir()) == []


def test_claim_times_out_when_all_busy(tmp_path):
    with gpus.claim_gpu(devices=["0"], lock_dir=tmp_path, environ={}, log=quiet):
        t0 = time.monotonic()
        with pytest.raises(SimulationError, match="SPEMD_GPU_WAIT_SECONDS: no GPU of 0 became free"):
            with gpus.claim_gpu(devices=["0"], lock_dir=tmp_path, environ={}, timeout=0.3,
                                poll_seconds=0.05, log=quiet):
                pass
        assert time.monotonic() - t0 < 5


def test_claim_timeout_from_environment(tmp_path):
    with gpus.claim_gpu(devices=["7"], lock_dir=tmp_path, environ={}, log=quiet):
        with pytest.raises(SimulationError):
            with gpus.claim_gpu(devices=["7"], lock_dir=tmp_path, environ={"SPEMD_GPU_WAIT_SECONDS": "0.2"},
                                poll_seconds=0.05, log=quiet):
                pass


def test_exception_in_block_releases_claim(tmp_path):
    with pytest.raises(RuntimeError):
        with gpus.claim_gpu(devices=["0"], lock_dir=tmp_path, environ={}, log=quiet):
            raise RuntimeError("simulation blew up")
    with gpus.claim_gpu(devices=["0"], lock_dir=tmp_path, environ={}, timeout=0, log=quiet) as dev:
        assert dev == "0"


def test_slurm_allocation_is_kept_without_locks(tmp_path):
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_GPUS": "3", "CUDA_VISIBLE_DEVICES": "0"}
    with gpus.claim_gpu(lock_dir=tmp_path, environ=env, log=quiet) as dev:
        assert dev == "0"
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
        # another Slurm job on the same node is numbered from 0 too: it must not wait for us
        env2 = dict(env, SLURM_JOB_ID="43")
        with gpus.claim_gpu(lock_dir=tmp_path, environ=env2, timeout=0, log=quiet) as dev2:
            assert dev2 == "0"
    assert list(tmp_path.iterdir()) == []


def test_slurm_allocation_with_several_gpus_is_shared_out(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEMD_GPU_LOCK_DIR", str(tmp_path))
    env1 = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0,1"}
    env2 = dict(env1)
    with gpus.claim_gpu(environ=env1, log=quiet) as a, gpus.claim_gpu(environ=env2, log=quiet) as b:
        assert {a, b} == {"0", "1"}
    assert [p.name for p in tmp_path.iterdir()] == ["slurm-job-42"]


# --- claims across processes ----------------------------------------------------------------------

def _worker(lock_dir: str, devices: list[str], hold: float, record: str, index: int) -> None:
    env = {}
    with gpus.claim_gpu(devices=devices, lock_dir=lock_dir, environ=env, poll_seconds=0.02, log=quiet) as dev:
        start = time.time()
        assert env["CUDA_VISIBLE_DEVICES"] == dev
        time.sleep(hold)
        end = time.time()
    Path(record, f"{index}.json").write_text(json.dumps({"device": dev, "start": start, "end": end}))


def test_concurrent_processes_get_distinct_devices_and_queue(tmp_path):
    devices = ["0", "1", "2"]
    records = tmp_path / "records"
    records.mkdir()
    ctx = mp.get_context("spawn")
    n = 7
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "locks"), devices, 0.4, str(records), i))
             for i in range(n)]
    t0 = time.time()
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    wall = time.time() - t0
    rows = [json.loads(f.read_text()) for f in records.iterdir()]
    assert len(rows) == n
    assert {r["device"] for r in rows} == set(devices)  # every card used
    # no two holders of one device overlap in time
    for dev in devices:
        spans = sorted((r["start"], r["end"]) for r in rows if r["device"] == dev)
        for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
            assert s2 >= e1, f"device {dev} held twice at once: {spans}"
    # never more holders than devices at any instant
    events = sorted([(r["start"], 1) for r in rows] + [(r["end"], -1) for r in rows])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak <= len(devices)
    # 7 jobs on 3 cards need at least 3 rounds of 0.4 s: the extra jobs queued
    assert wall >= 3 * 0.4


def test_killed_holder_does_not_leave_a_stale_claim(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from spemd.pipeline import gpus
        with gpus.claim_gpu(devices=["0"], lock_dir={str(tmp_path)!r}, environ={{}}, log=lambda m: None):
            print("claimed", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "claimed"
        with pytest.raises(SimulationError):
            with gpus.claim_gpu(devices=["0"], lock_dir=tmp_path, environ={}, timeout=0.2,
                                poll_seconds=0.05, log=quiet):
                pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        with gpus.claim_gpu(devices=["0"], lock_dir=tmp_path, environ={}, timeout=5,
                            poll_seconds=0.05, log=quiet) as dev:
            assert dev == "0"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
