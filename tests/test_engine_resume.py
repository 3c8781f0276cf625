"""Kill test: a stage SIGKILLed after its first checkpoint, rerun, equals an uninterrupted run."""

import csv
import json
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest

from spemd.pipeline import dcd, engine
from spemd.pipeline.testsystems import water_params

PROTO = {"timestep_fs": 2.0, "checkpoint_minutes": 1e-6, "barostat_interval": 10, "minimise_max_iterations": 50}
STAGE = {"name": "prod", "ensemble": "NPT", "time_ps": 0.24, "trajectory_interval_ps": 0.04, "state_interval_ps": 0.01}
REF = {"name": "Reference"}
SEED = 4

# Runs the stage, flushing every frame/row to disk, and SIGKILLs itself right after writing the
# state row of step KILL_STEP (a frame boundary: the frame is on disk, the checkpoint of that step is not).
CHILD = r"""
import os, signal, sys
from spemd.pipeline import dcd, engine, reporters
params, out, kill_step = sys.argv[1], sys.argv[2], int(sys.argv[3])
write = dcd.DCDWriter.write
def write_and_flush(self, *a):
    write(self, *a)
    self.flush()
dcd.DCDWriter.write = write_and_flush
report = reporters.StateCSVReporter.report
def report_then_die(self, sim, state):
    report(self, sim, state)
    self.flush()
    if sim.currentStep >= kill_step:
        os.kill(os.getpid(), signal.SIGKILL)
reporters.StateCSVReporter.report = report_then_die
engine.run_stage(params, {stage!r}, {proto!r}, {platform!r}, 300.0, {seed}, None, out)
"""


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    d = water_params(tmp_path_factory.mktemp("kill") / "params")
    engine.minimise(d, PROTO, REF, d.parent / "min")
    return d


def test_sigkill_after_first_checkpoint_then_resume_matches_uninterrupted(params, tmp_path, monkeypatch):
    import MDAnalysis as mda
    import mdtraj

    monkeypatch.delenv("SPEMD_MAX_WALL_SECONDS", raising=False)
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
    start = params.parent / "min" / "state.xml"
    full, killed = tmp_path / "full", tmp_path / "killed"
    engine.run_stage(params, STAGE, PROTO, REF, 300.0, SEED, start, full)

    # the child starts from the same minimised state: copy it to where the child looks (None = pdb)
    code = CHILD.format(stage=STAGE, proto=PROTO, platform=REF, seed=SEED).replace(
        "300.0, " + str(SEED) + ", None,", "300.0, " + str(SEED) + f", {str(start)!r},"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(params), str(killed), "40"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # state at the kill: frames at steps 20 and 40 on disk, checkpoint only at step 20, rows up to 40
    assert (killed / "checkpoint.chk").is_file() and not (killed / "done.json").exists()
    assert dcd.read_header(killed / "trajectory.dcd")["n_frames"] == 2
    assert int(_rows(killed / "state.csv")[-1]["Step"]) == 40

    done = engine.run_stage(params, STAGE, PROTO, REF, 300.0, SEED, start, killed)
    assert done["resumed_from_step"] == 20
    assert done["trajectory_frames"] == 6

    a = mdtraj.load_dcd(str(full / "trajectory.dcd"), top=str(params / "topology.pdb"))
    b = mdtraj.load_dcd(str(killed / "trajectory.dcd"), top=str(params / "topology.pdb"))
    assert a.n_frames == b.n_frames == 6
    np.testing.assert_allclose(b.time, a.time)  # mdtraj numbers DCD frames, not times
    np.testing.assert_array_equal(a.xyz[:1], b.xyz[:1])  # before the checkpoint: same seed, same frames
    # the checkpoint carries the random-number state: on Reference the continuation is bitwise the same
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_allclose(a.unitcell_lengths, b.unitcell_lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = [[ts.time for ts in mda.Universe(str(params / "topology.pdb"), str(d / "trajectory.dcd")).trajectory]
                 for d in (full, killed)]
    np.testing.assert_allclose(times[1], times[0], rtol=1e-6)
    np.testing.assert_allclose(times[1], 0.04 * np.arange(1, 7), rtol=1e-5)
    steps_a = [int(r["Step"]) for r in _rows(full / "state.csv")]
    steps_b = [int(r["Step"]) for r in _rows(killed / "state.csv")]
    assert steps_b == steps_a == list(range(5, 121, 5))
    assert json.loads((killed / "done.json").read_text())["steps"] == 120
