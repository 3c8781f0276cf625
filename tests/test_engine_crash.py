"""A stage killed by a signal (pipeline/crashwatch.py): one line naming stage, platform and step; the last
checkpoint stays usable and the resumed stage equals an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys

import mdtraj
import numpy as np
import pytest

from spemd.pipeline import engine
from spemd.pipeline.testsystems import water_params

PROTO = {"timestep_fs": 2.0, "checkpoint_minutes": 1e-6}  # a checkpoint at every frame (20 steps)
STAGE = {"name": "prod", "ensemble": "NVT", "time_ps": 0.16, "trajectory_interval_ps": 0.04, "state_interval_ps": 0.01}
REF = {"name": "Reference"}

# `spemd md` in a child that sends itself `sig` after the state row of step 45 (between the frames of 40 and 60)
CHILD = r"""
import os, signal, sys
from spemd.pipeline import cli, reporters
report = reporters.StateCSVReporter.report
def report_then_die(self, sim, state):
    report(self, sim, state)
    if sim.currentStep == 45:
        os.kill(os.getpid(), signal.{sig})
reporters.StateCSVReporter.report = report_then_die
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", ["SIGSEGV", "SIGBUS"])
def test_signal_death_names_stage_platform_step_and_checkpoint_resumes(tmp_path, sig):
    params = water_params(tmp_path / "params", box_nm=1.2, cutoff_nm=0.5)
    engine.minimise(params, {**PROTO, "minimise_max_iterations": 50}, REF, tmp_path / "min")
    start = tmp_path / "min" / "state.xml"
    full = engine.run_stage(params, STAGE, PROTO, REF, 300.0, 5, start, tmp_path / "full")
    cfg = {"protocol": {**PROTO, "stages": [STAGE]}, "platform": REF, "seed": 5}
    env = {k: v for k, v in os.environ.items() if k not in ("SPEMD_MAX_WALL_SECONDS", "SLURM_JOB_END_TIME", "SLURM_JOB_ID")}
    out = tmp_path / "crashed"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.replace("{sig}", sig), "md", "--config-json", json.dumps(cfg), "--params", str(params),
         "--stage", "prod", "--temperature", "300", "--replica", "0", "--start", str(start), "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == -getattr(signal, sig)
    lines = [ln for ln in proc.stderr.splitlines() if "killed by" in ln]
    assert lines == [f"stage prod: killed by {sig} on Reference, double precision at steps 40-60 of 80; "
                     f"last checkpoint (step 40) kept in {out / 'checkpoint.chk'}, rerun to resume from it"], proc.stderr[-2000:]
    assert "Fatal Python error" not in proc.stderr  # faulthandler's traceback went to the watch, not the log
    assert not (out / "done.json").exists()

    done = engine.run_stage(params, STAGE, PROTO, REF, 300.0, 5, start, out)
    assert done["resumed_from_step"] == 40
    top = str(params / "topology.pdb")
    a, b = mdtraj.load_dcd(str(tmp_path / "full" / "trajectory.dcd"), top=top), mdtraj.load_dcd(str(out / "trajectory.dcd"), top=top)
    assert a.n_frames == b.n_frames == 4
    np.testing.assert_array_equal(a.xyz, b.xyz)  # Reference + checkpointed RNG: bitwise the same
    assert done["final_potential_energy_kj_mol"] == full["final_potential_energy_kj_mol"]


def test_a_stage_that_ends_normally_or_by_error_reports_no_crash(tmp_path):
    params = water_params(tmp_path / "params", box_nm=1.2, cutoff_nm=0.5)
    engine.minimise(params, {**PROTO, "minimise_max_iterations": 50}, REF, tmp_path / "min")
    cfg = {"protocol": {**PROTO, "stages": [{**STAGE, "time_ps": 0.04}]}, "platform": REF, "seed": 5}
    args = ["md", "--config-json", json.dumps(cfg), "--params", str(params), "--stage", "prod", "--temperature", "300",
            "--start", str(tmp_path / "min" / "state.xml"), "--out", str(tmp_path / "ok")]
    proc = subprocess.run([sys.executable, "-m", "spemd", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "killed by" not in proc.stderr
