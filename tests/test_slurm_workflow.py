"""End to end through a real Slurm (ci/slurm/start.sh) with profiles/slurm-test.

A production stage is split over several Slurm jobs because each job's budget is short
(SPEMD_MAX_WALL_SECONDS: the stage checkpoints and exits 75, Snakemake's `retries` resubmit it), one
of its jobs is cancelled mid-run (scancel) and retried, and the finished outputs must equal those of
an uninterrupted local run (profiles/workstation): same frame count, same time axis.

Skipped, with the reason, when no Slurm cluster answers (`sinfo`), so ordinary test runs pass.
Start one with `ci/slurm/start.sh` (root, Debian); stop it with `ci/slurm/stop.sh`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "slurm"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
RUN_TIMEOUT_S = 900


def cluster_unavailable_reason() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm client (sinfo/sbatch) on PATH; start the test cluster with ci/slurm/start.sh"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: Slurm controller not answering (ci/slurm/start.sh)"
    if out.returncode != 0:
        return f"sinfo failed ({out.stderr.strip().splitlines()[-1:] or out.returncode}): " \
               "no Slurm cluster running; start it with ci/slurm/start.sh"
    states = set(out.stdout.split())
    if not states & {"idle", "mix", "alloc", "comp"}:
        return f"no usable Slurm node (sinfo states: {sorted(states) or 'none'})"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm not installed (pip install 'spemd[slurm]')"
    if not SNAKEMAKE.exists():
        return f"no snakemake next to {sys.executable}"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    reason = cluster_unavailable_reason()
    if reason:
        pytest.skip(reason)


def job_env(**extra) -> dict[str, str]:
    """Environment for Snakemake: no inherited Slurm job variables, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
    env.pop("SPEMD_MAX_WALL_SECONDS", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def config_args(config: dict) -> list[str]:
    return ["--config"] + [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in config.items()]


def copy_fixture(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("Snakefile", "fake_md.py"):
        shutil.copy(FIXTURE / name, dest / name)
    return dest


def slurm_jobs(run_id: str) -> list[dict]:
    """Jobs of one Snakemake run (job name = run id), in submission order; MinJobAge keeps old ones."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%T|%k|%j"],
                         capture_output=True, text=True, timeout=30).stdout
    jobs = []
    for line in out.splitlines():
        jobid, state, comment, name = line.split("|", 3)
        if name == run_id:
            jobs.append({"id": int(jobid), "state": state, "comment": comment})
    return sorted(jobs, key=lambda j: j["id"])


def read_frames(path: Path) -> list[tuple[int, float]]:
    with open(path) as fh:
        return [(int(r[0]), float(r[1])) for r in csv.reader(fh)]


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def checkpoint_frames(path: Path) -> int:
    try:
        return json.loads(path.read_text())["frames"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def run_through_slurm(cmd, cwd: Path, env, cancel_when, stage_suffix="_production"):
    """Run Snakemake with the slurm-test profile; scancel the first running job of the stage for
    which cancel_when(job) is true (once). Returns (returncode, output, run id, cancelled job id)."""
    log_path = cwd / "snakemake.out"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    run_id = cancelled = None
    try:
        while proc.poll() is None:
            assert time.monotonic() - t0 < RUN_TIMEOUT_S, "Snakemake through Slurm took too long"
            time.sleep(0.1)
            if run_id is None:
                m = re.search(r"SLURM run ID: (\S+)", log_path.read_text())
                run_id = m.group(1) if m else None
                continue
            if cancelled is not None:
                continue
            running = [j for j in slurm_jobs(run_id)
                       if j["state"] == "RUNNING" and j["comment"].endswith(stage_suffix)]
            if running and cancel_when(running[0]):
                cancelled = running[0]["id"]
                subprocess.run(["scancel", str(cancelled)], check=True, timeout=30)
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
    return rc, log_path.read_text(), run_id, cancelled


def slurm_job_log(workdir: Path, jobid: int) -> str:
    """The Slurm log of one job (the plugin keeps those of failed jobs under .snakemake/slurm_logs)."""
    logs = list((workdir / ".snakemake" / "slurm_logs").rglob(f"{jobid}.log"))
    return logs[0].read_text(errors="replace") if logs else ""


def check_slurm_jobs(rc, out, run_id, cancelled, stage_suffix="_production", workdir=None):
    """The Slurm side: the stage took several jobs, one cancelled, the resumed ones exited 75."""
    assert rc == 0, out[-5000:]
    assert run_id, "no 'SLURM run ID' in Snakemake's output: was the slurm executor used?"
    assert cancelled is not None, "no production job was seen running to cancel"
    jobs = slurm_jobs(run_id)
    stage_jobs = [j for j in jobs if j["comment"].endswith(stage_suffix)]
    states = [j["state"] for j in stage_jobs]
    assert len(stage_jobs) >= 3, f"{states}: the stage fitted in too few jobs; lower the per-job budget"
    assert states.count("CANCELLED") == 1 and states[-1] == "COMPLETED", states
    assert "FAILED" in states, states  # at least one job stopped at its budget (exit 75)
    if workdir is not None:
        # a budget stop must be the clean exit 75 ("rerun to continue"), not a crash that a retry happens to fix
        for job in (j for j in stage_jobs if j["state"] == "FAILED"):
            text = slurm_job_log(workdir, job["id"])
            assert re.search(r"exit status 75\b", text), f"job {job['id']}: no 'exit status 75' in its Slurm log:\n{text[-2000:]}"
    assert all(j["state"] == "COMPLETED" for j in jobs if not j["comment"].endswith(stage_suffix)), jobs
    return stage_jobs, states


# --- the fixture workflow ---------------------------------------------------------------------------

FIXTURE_CONFIG = {"production_frames": 30, "seconds_per_frame": 0.25, "checkpoint_every": 5}
BUDGET_S = 4  # per Slurm job: production needs 7.5 s of "MD", so 2 jobs, plus the cancelled one


def test_fixture_production_over_several_slurm_jobs_with_a_cancelled_one(tmp_path, slurm_cluster):
    # reference: the same workflow, uninterrupted, locally with the workstation profile (two fake GPUs)
    local = copy_fixture(tmp_path / "local")
    t0 = time.monotonic()
    ref = subprocess.run(
        [str(SNAKEMAKE), "--profile", str(ROOT / "profiles" / "workstation"), "--cores", "2",
         *config_args(FIXTURE_CONFIG)],
        cwd=local, env=job_env(SPEMD_GPUS="0,1", SPEMD_GPU_LOCK_DIR=tmp_path / "gpu-locks"),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    local_s = time.monotonic() - t0
    reference = read_frames(local / "results/A/md/production/frames.csv")
    assert len(reference) == FIXTURE_CONFIG["production_frames"]

    # the same through Slurm, with a short budget per job and one job cancelled mid-run
    remote = copy_fixture(tmp_path / "slurm")
    prod = remote / "results/A/md/production"

    def frames_past_checkpoint(job):
        # cancel once the job has written frames after its last checkpoint: the retry must drop them
        return count_lines(prod / "frames.csv") > checkpoint_frames(prod / "checkpoint.json")

    t0 = time.monotonic()
    rc, out, run_id, cancelled = run_through_slurm(
        [str(SNAKEMAKE), "--profile", str(ROOT / "profiles" / "slurm-test"), *config_args(FIXTURE_CONFIG)],
        cwd=remote, env=job_env(SPEMD_MAX_WALL_SECONDS=BUDGET_S), cancel_when=frames_past_checkpoint)
    slurm_s = time.monotonic() - t0
    production, states = check_slurm_jobs(rc, out, run_id, cancelled, workdir=remote)

    # the result equals the uninterrupted local run
    frames = read_frames(prod / "frames.csv")
    assert len(frames) == len(reference)
    assert [t for _, t in frames] == [t for _, t in reference]  # time axis
    assert (prod / "frames.csv").read_text() == (local / "results/A/md/production/frames.csv").read_text()
    assert json.loads((remote / "results/summary.json").read_text()) == \
        json.loads((local / "results/summary.json").read_text())

    done = json.loads((prod / "done.json").read_text())
    segments = done["segments"]  # one per job that stopped cleanly (the cancelled one left none)
    assert len(segments) >= 2
    assert {s["job"] for s in segments} <= {str(j["id"]) for j in production}
    assert all(s["cuda_visible_devices"] not in (None, "") for s in segments), \
        "GPU jobs ran without a GPU allocated by Slurm"
    # the job after the cancelled one threw away the frames written after the last checkpoint
    assert any(s["dropped_bytes"] > 0 for s in segments), segments
    print(f"\nlocal run {local_s:.0f} s; Slurm run {slurm_s:.0f} s, production jobs {states}")


# --- the real workflow ------------------------------------------------------------------------------
# Opt-in until the real workflow runs end to end on the tiny config: SPEMD_SLURM_REAL_WORKFLOW=1.
# Runs build..equilibrate of the first system locally (profiles/workstation), then the production of
# a copy of that folder through Slurm with a per-job budget (SPEMD_SLURM_TEST_BUDGET, default 15 s) and
# one job cancelled, and compares the production with the local one (DCD frames, state.csv time axis).

# The engine stops when elapsed + 2 segments + 5 s would pass the budget, and a job spends seconds before
# its first step (platform choice, input hashes, crash watcher): 10 s gave 0.2 ps a job (CPE, one core,
# 2026-12-06), 11 jobs at ~1 min of Slurm polling each; 15 s gave 0.6 ps, so a 2 ps production spans
# >= 3 jobs (one cancelled) in a few minutes
REAL_BUDGET_S = float(os.environ.get("SPEMD_SLURM_TEST_BUDGET", "15"))
REAL_PRODUCTION_PS = 2.0


def real_workflow_reason() -> str | None:
    if os.environ.get("SPEMD_SLURM_REAL_WORKFLOW", "") not in ("1", "true", "yes"):
        return "real workflow through Slurm is opt-in: set SPEMD_SLURM_REAL_WORKFLOW=1"
    if not (ROOT / "Snakefile").exists() or not (ROOT / "rules" / "simulate.smk").exists():
        return "no Snakefile/rules/simulate.smk yet"
    return None


def state_csv_times(path: Path) -> list[float]:
    with open(path) as fh:
        rows = list(csv.reader(fh))
    column = rows[0].index("Time (ps)") if "Time (ps)" in rows[0] else 1
    return [float(r[column]) for r in rows[1:] if r]


def test_real_workflow_production_over_several_slurm_jobs(tmp_path, slurm_cluster):
    reason = real_workflow_reason()
    if reason:
        pytest.skip(reason)
    from spemd.config import load_config, validate_config
    from spemd.pipeline.dcd import read_header

    import yaml

    # the default config with a shorter production, so that a few jobs of REAL_BUDGET_S finish it
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["protocol"]["stages"][-1]["time_ps"] = REAL_PRODUCTION_PS
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    cfg = validate_config(load_config(config_file))
    system = next(iter(cfg["systems"]))
    temperature = f"{cfg['temperatures_K'][0]:g}"
    production = cfg["protocol"]["stages"][-1]["name"]
    stage_dir = f"results/{system}/rep0/{temperature}K/md/{production}"
    common = ["-s", str(ROOT / "Snakefile"), "--configfile", str(config_file), "--rerun-triggers", "mtime"]

    local = tmp_path / "local"
    local.mkdir()
    t0 = time.monotonic()
    ref = subprocess.run(
        [str(SNAKEMAKE), *common, "--profile", str(ROOT / "profiles" / "workstation"), "--cores", "2",
         "--retries", "0", f"{stage_dir}/done.json"],
        cwd=local, env=job_env(SPEMD_GPU_LOCK_DIR=tmp_path / "gpu-locks"),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    local_s = time.monotonic() - t0

    # everything before production, as produced locally (mtimes kept), then production via Slurm
    remote = tmp_path / "slurm"
    shutil.copytree(local / "results", remote / "results",
                    ignore=lambda d, names: [production] if Path(d).name == "md" else [])
    prod = remote / stage_dir

    def progressed(job, seen={}):
        # cancel once this job has added state.csv rows, i.e. mid-run, not during its start-up
        rows = count_lines(prod / "state.csv")
        first = seen.setdefault(job["id"], rows)
        return rows > first

    t0 = time.monotonic()
    rc, out, run_id, cancelled = run_through_slurm(
        [str(SNAKEMAKE), *common, "--profile", str(ROOT / "profiles" / "slurm-test"), f"{stage_dir}/done.json"],
        cwd=remote, env=job_env(SPEMD_MAX_WALL_SECONDS=REAL_BUDGET_S), cancel_when=progressed)
    slurm_s = time.monotonic() - t0
    _, states = check_slurm_jobs(rc, out, run_id, cancelled, workdir=remote)

    ref_dir = local / stage_dir
    head, ref_head = read_header(prod / "trajectory.dcd"), read_header(ref_dir / "trajectory.dcd")
    assert head["n_frames"] == ref_head["n_frames"] > 0
    for key in ("first_step", "interval", "n_atoms"):
        assert head[key] == ref_head[key], key
    assert head["dt_ps"] == pytest.approx(ref_head["dt_ps"])
    assert state_csv_times(prod / "state.csv") == pytest.approx(state_csv_times(ref_dir / "state.csv"))
    done, ref_done = (json.loads((d / "done.json").read_text()) for d in (prod, ref_dir))
    assert done.get("simulated_time_ps") == ref_done.get("simulated_time_ps")
    print(f"\nreal workflow: local {local_s:.0f} s; Slurm production {slurm_s:.0f} s, jobs {states}")
