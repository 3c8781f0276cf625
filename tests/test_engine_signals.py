"""Stop signals and checkpoint integrity: SIGTERM -> checkpoint + exit 75 -> exact resume; bad checkpoints stop."""

import csv
import json
import shutil
import signal
import subprocess
import sys

import mdtraj
import numpy as np
import pytest

from spemd.errors import SimulationError
from spemd.pipeline import dcd, engine
from spemd.pipeline.testsystems import water_params

# same small NPT water stage as test_engine_resume: 120 steps of 2 fs, frames every 20 steps
PROTO = {"timestep_fs": 2.0, "checkpoint_minutes": 1e-6, "barostat_interval": 10, "minimise_max_iterations": 50}
STAGE = {"name": "prod", "ensemble": "NPT", "time_ps": 0.24, "trajectory_interval_ps": 0.04, "state_interval_ps": 0.01}
REF = {"name": "Reference"}
SEED = 4
SIGNAL_STEP = 45  # between the frames of steps 40 and 60

# `spemd md` in a child that SIGTERMs itself after the state row of SIGNAL_STEP. Its protocol has an
# hour between timed checkpoints, so a checkpoint on disk can only come from the signal handling.
CHILD = r"""
import os, signal, sys
from spemd.pipeline import cli, reporters
report = reporters.StateCSVReporter.report
def report_then_term(self, sim, state):
    report(self, sim, state)
    if sim.currentStep == {step}:
        os.kill(os.getpid(), signal.SIGTERM)
reporters.StateCSVReporter.report = report_then_term
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(params, start state, uninterrupted stage folder, SIGTERMed stage folder, child's result)."""
    root = tmp_path_factory.mktemp("signals")
    params = water_params(root / "params")
    engine.minimise(params, PROTO, REF, root / "min")
    start = root / "min" / "state.xml"
    full, stopped = root / "full", root / "stopped"
    engine.run_stage(params, STAGE, PROTO, REF, 300.0, SEED, start, full)
    cfg = {"protocol": {**PROTO, "checkpoint_minutes": 60, "stages": [STAGE]}, "platform": REF, "seed": SEED}
    env_clean = {k: v for k, v in __import__("os").environ.items() if k not in ("SPEMD_MAX_WALL_SECONDS", "SLURM_JOB_END_TIME", "SLURM_JOB_ID")}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(step=SIGNAL_STEP), "md", "--config-json", json.dumps(cfg),
         "--params", str(params), "--stage", "prod", "--temperature", "300", "--replica", "0",
         "--start", str(start), "--out", str(stopped)],
        capture_output=True, text=True, timeout=300, env=env_clean,
    )
    return params, start, full, stopped, proc


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_sigterm_checkpoints_at_next_frame_exits_75_and_resumes_exactly(runs, tmp_path, monkeypatch):
    monkeypatch.delenv("SPEMD_MAX_WALL_SECONDS", raising=False)
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
    params, start, full, stopped, proc = runs
    assert proc.returncode == 75, proc.stderr
    assert "SIGTERM received at step 60 of 120" in proc.stderr
    side = json.loads((stopped / "checkpoint.json").read_text())
    assert side["step"] == 60 and side["timestep_fs"] == 2.0 and side["platform"] == "Reference"
    assert not (stopped / "done.json").exists()
    assert dcd.read_header(stopped / "trajectory.dcd")["n_frames"] == 3

    resumed = _copy(stopped, tmp_path / "resumed")
    done = engine.run_stage(params, STAGE, PROTO, REF, 300.0, SEED, start, resumed)
    # the signal came at step 45; the checkpoint is at the next frame (60): nothing already run is redone
    assert done["resumed_from_step"] == 60 and done["trajectory_frames"] == 6
    a = mdtraj.load_dcd(str(full / "trajectory.dcd"), top=str(params / "topology.pdb"))
    b = mdtraj.load_dcd(str(resumed / "trajectory.dcd"), top=str(params / "topology.pdb"))
    assert a.n_frames == b.n_frames == 6
    np.testing.assert_array_equal(a.xyz, b.xyz)  # Reference + checkpointed RNG: bitwise the same
    with open(resumed / "state.csv") as fh:
        rows = list(csv.DictReader(fh))
    with open(full / "state.csv") as fh:
        assert [r["Step"] for r in rows] == [r["Step"] for r in csv.DictReader(fh)] == [str(s) for s in range(5, 121, 5)]
    assert done["final_time_ps"] == pytest.approx(0.24)
    # provenance names the force-field files (the water test system lists its XML without hashes)
    assert done["provenance"]["forcefield_files"] == {"amber14/tip3p.xml": None}


def test_truncated_checkpoint_stops_naming_the_file(runs, tmp_path):
    params, start, _, stopped, _ = runs
    d = _copy(stopped, tmp_path / "trunc")
    data = (d / "checkpoint.chk").read_bytes()
    (d / "checkpoint.chk").write_bytes(data[: len(data) // 2])
    with pytest.raises(SimulationError, match=r"checkpoint\.chk: corrupt or truncated \(SHA-256 differs from checkpoint\.json"):
        engine.run_stage(params, STAGE, PROTO, REF, 300.0, SEED, start, d)
    assert not (d / "done.json").exists()


def test_time_step_change_on_resume_of_an_unrecorded_checkpoint_stops(runs, tmp_path):
    # with its record, a changed time step starts the stage afresh (test_engine_resume); without it (an
    # older checkpoint) the inputs are unknown, and the checkpoint's own time gives the step away
    params, start, _, stopped, _ = runs
    proto = {**PROTO, "timestep_fs": 1.0}
    d = _copy(stopped, tmp_path / "dt")
    (d / "checkpoint.json").unlink()
    with pytest.raises(SimulationError, match=r"written with protocol\.timestep_fs 2 \(t = 0\.12 ps at step 60\), this run has 1"):
        engine.run_stage(params, STAGE, proto, REF, 300.0, SEED, start, d)


def test_kill_between_checkpoint_and_record_renames_is_recovered(runs, tmp_path):
    params, start, _, stopped, _ = runs
    d = _copy(stopped, tmp_path / "pending")
    # as if killed after checkpoint.chk was renamed but before checkpoint.json.new was
    record = json.loads((d / "checkpoint.json").read_text())
    (d / "checkpoint.json.new").write_text(json.dumps(record))
    (d / "checkpoint.json").write_text(json.dumps({**record, "step": 40, "sha256": "0" * 64}))
    done = engine.run_stage(params, STAGE, PROTO, REF, 300.0, SEED, start, d)
    assert done["resumed_from_step"] == 60
    assert not (d / "checkpoint.json.new").exists()
