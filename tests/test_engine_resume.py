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


# ------------------------------------------------------------------ a stage bound to its inputs


def _md5(path):
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def _xyz(folder, params):
    import mdtraj

    return mdtraj.load_dcd(str(folder / "trajectory.dcd"), top=str(params / "topology.pdb")).xyz


@pytest.fixture()
def finished(params, tmp_path, monkeypatch):
    """A finished stage folder (seed SEED) whose done.json a rerun trigger has removed, as Snakemake does."""
    monkeypatch.delenv("SPEMD_MAX_WALL_SECONDS", raising=False)
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
    out = tmp_path / "prod"
    engine.run_stage(params, STAGE, PROTO, REF, 300.0, SEED, params.parent / "min" / "state.xml", out)
    return out


def test_changed_seed_restarts_and_keeps_the_old_folder_until_the_new_run_is_done(params, finished, caplog):
    import logging

    start = params.parent / "min" / "state.xml"
    old_md5 = _md5(finished / "trajectory.dcd")
    (finished / "done.json").unlink()
    with caplog.at_level(logging.INFO, logger="spemd.pipeline"):
        # the new run stops at its first frame boundary: the old run is still kept beside it
        with pytest.raises(engine.StageIncomplete):
            engine.run_stage(params, STAGE, PROTO, REF, 300.0, SEED + 1, start, finished, max_wall_seconds=0)
    kept = finished.with_name("prod.replaced")
    assert _md5(kept / "trajectory.dcd") == old_md5
    lines = [r.getMessage() for r in caplog.records if "starting afresh" in r.getMessage()]
    assert len(lines) == 1 and "stage config changed" in lines[0] and "start state" not in lines[0]
    done = engine.run_stage(params, STAGE, PROTO, REF, 300.0, SEED + 1, start, finished)
    assert not kept.exists()  # removed once the new run has its done.json
    assert done["seed"] == SEED + 1 and done["resumed_from_step"] == 20  # resumed its own checkpoint
    assert done["inputs"] == json.loads((finished / "checkpoint.json").read_text())["inputs"]
    assert _md5(finished / "trajectory.dcd") != old_md5


@pytest.mark.parametrize("change", ["friction", "start", "system_xml", "forced"])
def test_every_rerun_trigger_resimulates_the_whole_stage(params, finished, tmp_path, caplog, change):
    import logging
    import shutil

    start, proto, run_params = params.parent / "min" / "state.xml", PROTO, params
    expect = {"friction": "stage config", "start": "start state", "system_xml": "system.xml (force field)",
              "forced": "finished before and its done.json was removed (a forced rerun)"}[change]
    if change == "friction":
        proto = {**PROTO, "friction_per_ps": 5.0}
    elif change == "start":
        start = None  # the unminimised topology.pdb
    elif change == "system_xml":  # a charge scale: every charge x 0.9
        run_params = shutil.copytree(params, tmp_path / "params_scaled")
        system = engine.Params(run_params).system
        nb = next(f for f in system.getForces() if isinstance(f, __import__("openmm").NonbondedForce))
        for i in range(nb.getNumParticles()):
            q, s, e = nb.getParticleParameters(i)
            nb.setParticleParameters(i, 0.9 * q, s, e)
        (run_params / "system.xml").write_text(__import__("openmm").XmlSerializer.serialize(system))
    old = _xyz(finished, params)
    (finished / "done.json").unlink()
    with caplog.at_level(logging.INFO, logger="spemd.pipeline"):
        done = engine.run_stage(run_params, STAGE, proto, REF, 300.0, SEED, start, finished)
    assert done["resumed_from_step"] is None and done["steps_this_run"] == 120
    lines = [r.getMessage() for r in caplog.records if "starting afresh" in r.getMessage()]
    assert len(lines) == 1 and expect in lines[0], lines
    new = _xyz(finished, params)
    if change == "forced":  # same inputs: simulated again, and on Reference bitwise the same
        np.testing.assert_array_equal(new, old)
    else:  # what a clean run with the new inputs gives
        assert np.abs(new - old).max() > 1e-4
        engine.run_stage(run_params, STAGE, proto, REF, 300.0, SEED, start, tmp_path / "clean")
        np.testing.assert_array_equal(new, _xyz(tmp_path / "clean", params))


def test_finished_stage_with_other_inputs_in_done_json_is_redone(params, finished):
    done = engine.run_stage(params, STAGE, PROTO, REF, 300.0, SEED + 2, params.parent / "min" / "state.xml", finished)
    assert done["seed"] == SEED + 2 and done["steps_this_run"] == 120
    assert json.loads((finished / "done.json").read_text())["inputs"] == done["inputs"]


# ------------------------------------------------------------------ one owner per stage folder

HOLDER = r"""
import sys, time
from spemd.pipeline import engine
def hold(step):
    print("checkpointed", flush=True)
    time.sleep(120)
engine._after_checkpoint = hold
engine.run_stage({params!r}, {stage!r}, {proto!r}, {platform!r}, 300.0, {seed}, {start!r}, {out!r})
"""


def test_orphan_holds_the_folder_second_process_refuses_and_touches_nothing(params, tmp_path):
    import os
    import socket

    from spemd.pipeline import cli

    out, start = tmp_path / "prod", str(params.parent / "min" / "state.xml")
    code = HOLDER.format(params=str(params), stage=STAGE, proto=PROTO, platform=REF, seed=SEED, start=start, out=str(out))
    orphan = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert orphan.stdout.readline().strip() == "checkpointed"
        before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.iterdir()}
        cfg = {"protocol": {**PROTO, "stages": [STAGE]}, "platform": REF, "seed": SEED}
        second = subprocess.run(
            [sys.executable, "-m", "spemd", "md", "--config-json", json.dumps(cfg), "--params", str(params),
             "--stage", "prod", "--temperature", "300", "--replica", "0", "--start", start, "--out", str(out)],
            capture_output=True, text=True, timeout=120,
        )
        assert second.returncode == cli.EXIT_ERROR
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"PID {orphan.pid} on host {socket.gethostname()}" in lines[0] and "nothing was changed" in lines[0]
        assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.iterdir()} == before
        with pytest.raises(engine.SimulationError, match=f"PID {orphan.pid}"):
            engine.minimise(params, PROTO, REF, out)
    finally:
        orphan.kill()
        orphan.wait()
    # SIGKILL leaves no stale lock: the next run takes the folder over and finishes from the checkpoint
    assert os.path.exists(out / "spemd.lock")
    done = engine.run_stage(params, STAGE, PROTO, REF, 300.0, SEED, start, out)
    assert done["resumed_from_step"] == 20
