"""pipeline.engine: minimisation, stages, ensembles, annealing, budget stops and blow-ups.

Tiny TIP3P boxes (~120 atoms) on the Reference platform (deterministic) or CPU with one thread.
"""

import csv
import json
import os
import warnings

import numpy as np
import openmm
import pytest
from openmm import unit

from spemd.pipeline import engine
from spemd.errors import ConfigError, SimulationError
from spemd.pipeline.platforms import available_platforms
from spemd.pipeline.reporters import CSV_COLUMNS
from spemd.pipeline.testsystems import water_params

REF = {"name": "Reference"}
PROTO = {"timestep_fs": 2.0, "friction_per_ps": 1.0, "pressure_bar": 1.0, "barostat_interval": 5,
         "checkpoint_minutes": 10, "minimise_max_iterations": 100}


@pytest.fixture(scope="module")
def water(tmp_path_factory):
    d = water_params(tmp_path_factory.mktemp("water") / "params")
    engine.minimise(d, PROTO, REF, d.parent / "min")
    return d


@pytest.fixture(scope="module")
def slab(tmp_path_factory):
    d = water_params(tmp_path_factory.mktemp("slab") / "params", slab_grid=3, height_nm=2.0)
    engine.minimise(d, PROTO, REF, d.parent / "min")
    return d


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OPENMM_CPU_THREADS", "1")
    for var in ("SPEMD_MAX_WALL_SECONDS", "SLURM_JOB_END_TIME"):
        monkeypatch.delenv(var, raising=False)


def _stage(name="s", ensemble="NVT", time_ps=0.2, traj=0.04, rows=0.02, **kw):
    return {"name": name, "ensemble": ensemble, "time_ps": time_ps, "trajectory_interval_ps": traj,
            "state_interval_ps": rows, **kw}


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _frames(out, params):
    import mdtraj

    return mdtraj.load_dcd(str(out / "trajectory.dcd"), top=str(params / "topology.pdb"))


# ------------------------------------------------------------------------------------------- minimise


def test_minimise_lowers_energy_and_writes_state(water):
    done = json.loads((water.parent / "min" / "done.json").read_text())
    assert done["potential_energy_after_kj_mol"] < done["potential_energy_before_kj_mol"]
    assert done["platform"] == "Reference" and "provenance" in done
    state = openmm.XmlSerializer.deserialize((water.parent / "min" / "state.xml").read_text())
    system = openmm.XmlSerializer.deserialize((water / "system.xml").read_text())
    assert len(state.getPositions()) == system.getNumParticles()
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_allclose(np.diag(box), [1.3, 1.3, 1.3])


def test_minimise_keeps_massless_atoms_fixed_and_is_not_redone(slab):
    from openmm import app

    out = slab.parent / "min"
    meta = json.loads((slab / "forcefield.json").read_text())
    idx = meta["mof_atom_indices"]
    before = app.PDBFile(str(slab / "topology.pdb")).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    state = openmm.XmlSerializer.deserialize((out / "state.xml").read_text())
    after = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_allclose(after[idx], before[idx], atol=1e-6)
    assert np.abs(after - before).max() > 1e-3  # the water did move
    mtime = (out / "done.json").stat().st_mtime_ns
    again = engine.minimise(slab, PROTO, REF, out)
    assert (out / "done.json").stat().st_mtime_ns == mtime
    assert again == json.loads((out / "done.json").read_text())


# ---------------------------------------------------------------------------------------------- stages


def test_nvt_stage_outputs_and_time_axis(water, tmp_path):
    import MDAnalysis as mda

    out = tmp_path / "nvt"
    done = engine.run_stage(water, _stage(), PROTO, REF, 300.0, 11, water.parent / "min" / "state.xml", out)
    assert done["steps"] == 100 and done["trajectory_frames"] == 5
    assert done["simulated_time_ps"] == pytest.approx(0.2)
    assert done["platform"] == "Reference" and done["provenance"]["seed"] == 11
    for name in ("trajectory.dcd", "state.csv", "checkpoint.chk", "state.xml", "done.json"):
        assert (out / name).is_file()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    rows = _rows(out / "state.csv")
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {"Time (ps)", "Step", "Temperature (K)", "Potential Energy (kJ/mole)", "Volume (nm^3)",
            "Density (g/mL)", "Speed (ns/day)", "ETA (s)"} <= set(CSV_COLUMNS)
    assert [int(r["Step"]) for r in rows] == list(range(10, 101, 10))
    np.testing.assert_allclose([float(r["Time (ps)"]) for r in rows], np.arange(1, 11) * 0.02, atol=1e-9)
    assert all(np.isfinite(float(r["Potential Energy (kJ/mole)"])) for r in rows)
    assert all(float(r["Density (g/mL)"]) > 0.5 for r in rows)
    traj = _frames(out, water)
    assert traj.n_frames == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(str(water / "topology.pdb"), str(out / "trajectory.dcd"))
    np.testing.assert_allclose([ts.time for ts in u.trajectory], [0.04, 0.08, 0.12, 0.16, 0.2], rtol=1e-5)
    final = openmm.XmlSerializer.deserialize((out / "state.xml").read_text())
    assert final.getTime().value_in_unit(unit.picosecond) == pytest.approx(0.2)
    # last frame is the final state (unwrapped coordinates)
    np.testing.assert_allclose(traj.xyz[-1], final.getPositions(asNumpy=True).value_in_unit(unit.nanometer), atol=1e-5)


def test_same_seed_reproduces_and_other_seed_differs(water, tmp_path):
    start = water.parent / "min" / "state.xml"
    runs = {}
    for tag, seed in (("a", 5), ("b", 5), ("c", 6)):
        engine.run_stage(water, _stage(time_ps=0.08), PROTO, REF, 300.0, seed, start, tmp_path / tag)
        runs[tag] = _frames(tmp_path / tag, water).xyz
    np.testing.assert_array_equal(runs["a"][0], runs["b"][0])
    np.testing.assert_array_equal(runs["a"], runs["b"])
    assert np.abs(runs["a"][0] - runs["c"][0]).max() > 1e-4


def test_finished_stage_is_not_rerun(water, tmp_path):
    out = tmp_path / "s"
    first = engine.run_stage(water, _stage(time_ps=0.04), PROTO, REF, 300.0, 1, None, out)
    # the lock file records each owner (PID, host); every output stays untouched
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "spemd.lock"}
    again = engine.run_stage(water, _stage(time_ps=0.04), PROTO, REF, 300.0, 1, None, out)
    assert again == json.loads((out / "done.json").read_text())
    assert again["provenance"]["created_utc"] == first["provenance"]["created_utc"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "spemd.lock"} == stamps


def test_annealing_ramp_sets_thermostat_temperature_on_schedule(water, tmp_path):
    stage = _stage(time_ps=0.2, traj=0, rows=0.02, temperature_K=[300.0, 400.0])
    out = tmp_path / "anneal"
    done = engine.run_stage(water, stage, PROTO, REF, 350.0, 3, None, out)
    assert done["trajectory_frames"] == 0 and not (out / "trajectory.dcd").exists()
    rows = _rows(out / "state.csv")
    steps = np.array([int(r["Step"]) for r in rows])
    target = np.array([float(r["Thermostat Temperature (K)"]) for r in rows])
    np.testing.assert_allclose(target, 300.0 + 100.0 * steps / 100, atol=1e-3)
    assert target[-1] == pytest.approx(400.0)
    assert engine.stage_temperature(stage, 350.0, 50, 100) == pytest.approx(350.0)
    assert engine.stage_temperature({"name": "x"}, 350.0, 50, 100) == 350.0
    assert engine.stage_temperature({"name": "x", "temperature_K": 280}, 350.0, 50, 100) == 280.0
    assert engine.stage_temperature({"name": "x", "temperature_K": "run"}, 350.0, 50, 100) == 350.0
    assert engine.stage_temperature({"name": "x", "temperature_K": [500, "run"]}, 350.0, 50, 100) == 425.0
    with pytest.raises(ConfigError, match="protocol.stages.x.temperature_K: 'hot'"):
        engine.stage_temperature({"name": "x", "temperature_K": "hot"}, 350.0, 0, 100)


def test_npt_isotropic_without_slab(water, tmp_path):
    out = tmp_path / "npt"
    done = engine.run_stage(water, _stage("npt", "NPT", time_ps=0.3, traj=0.02), PROTO, REF, 300.0, 2,
                            water.parent / "min" / "state.xml", out)
    traj = _frames(out, water)
    lengths = traj.unitcell_lengths
    assert np.ptp(lengths[:, 2]) > 1e-4  # the box moved
    np.testing.assert_allclose(lengths[:, 0], lengths[:, 2], rtol=1e-5)
    np.testing.assert_allclose(lengths[:, 1], lengths[:, 2], rtol=1e-5)
    vols = [float(r["Volume (nm^3)"]) for r in _rows(out / "state.csv")]
    assert np.ptp(vols) > 0
    assert done["ensemble"] == "NPT"


def test_npt_with_slab_moves_only_z_and_keeps_slab_rigid(slab, tmp_path):
    out = tmp_path / "npt"
    idx = json.loads((slab / "forcefield.json").read_text())["mof_atom_indices"]
    engine.run_stage(slab, _stage("npt", "NPT", time_ps=0.3, traj=0.02), PROTO, {"name": "CPU"}, 300.0, 2,
                     slab.parent / "min" / "state.xml", out)
    traj = _frames(out, slab)
    lengths = traj.unitcell_lengths
    assert np.ptp(lengths[:, 2]) > 1e-4  # z fluctuates
    np.testing.assert_allclose(lengths[:, :2], 1.3, atol=1e-6)  # x, y fixed
    xyz = traj.xyz[:, idx, :]
    d = np.linalg.norm(xyz[:, :, None, :] - xyz[:, None, :, :], axis=-1)
    np.testing.assert_allclose(d, np.broadcast_to(d[0], d.shape), atol=2e-5)  # intra-slab distances constant
    start = openmm.XmlSerializer.deserialize((slab.parent / "min" / "state.xml").read_text())
    p0 = start.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[idx]
    np.testing.assert_allclose(xyz[:, :, :2], np.broadcast_to(p0[:, :2], xyz[:, :, :2].shape), atol=2e-5)


# ------------------------------------------------------------------------------------- wall-time budget


def test_budget_stop_then_rerun_equals_uninterrupted(water, tmp_path):
    start = water.parent / "min" / "state.xml"
    stage = _stage(time_ps=0.16, traj=0.04, rows=0.01)
    full = tmp_path / "full"
    engine.run_stage(water, stage, PROTO, REF, 300.0, 9, start, full)
    part = tmp_path / "part"
    with pytest.raises(engine.StageIncomplete, match="rerun to continue") as err:
        engine.run_stage(water, stage, PROTO, REF, 300.0, 9, start, part, max_wall_seconds=0)
    assert isinstance(err.value, SimulationError)
    assert (part / "checkpoint.chk").is_file() and not (part / "done.json").exists()
    assert _frames(part, water).n_frames == 1
    done = engine.run_stage(water, stage, PROTO, REF, 300.0, 9, start, part)
    assert done["resumed_from_step"] == 20
    a, b = _frames(full, water), _frames(part, water)
    assert a.n_frames == b.n_frames == 4
    np.testing.assert_allclose(a.time, b.time)
    np.testing.assert_array_equal(a.xyz, b.xyz)  # Reference + checkpointed RNG: bitwise continuation
    assert [r["Step"] for r in _rows(full / "state.csv")] == [r["Step"] for r in _rows(part / "state.csv")]


def test_budget_from_environment(monkeypatch, water, tmp_path):
    monkeypatch.setenv("SPEMD_MAX_WALL_SECONDS", "0")
    with pytest.raises(engine.StageIncomplete):
        engine.run_stage(water, _stage(time_ps=0.08), PROTO, REF, 300.0, 1, None, tmp_path / "s")
    assert engine.wall_budget_seconds(12.5) == 12.5
    monkeypatch.delenv("SPEMD_MAX_WALL_SECONDS")
    import time

    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 3600))
    budget = engine.wall_budget_seconds(None)
    assert 3600 - engine.SLURM_END_MARGIN_S - 5 < budget <= 3600 - engine.SLURM_END_MARGIN_S + 1
    monkeypatch.delenv("SLURM_JOB_END_TIME")
    assert engine.wall_budget_seconds(None) is None


# ------------------------------------------------------------------------------------------- failures


def _without_pme(params_dir, out_dir):
    """A copy of a params folder whose Coulomb has no reciprocal-space grid.

    Exploding coordinates reach NaN within a few steps, and OpenMM's Reference/CPU PME then indexes its
    charge grid with NaN-derived (out-of-range) cells and corrupts the heap (a segfault much later, in
    another test). With plain cutoffs NaN coordinates only give NaN energies.
    """
    import shutil

    shutil.copytree(params_dir, out_dir)
    system = openmm.XmlSerializer.deserialize((out_dir / "system.xml").read_text())
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    (out_dir / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    return out_dir


def test_blow_up_names_stage_step_and_time(water, tmp_path):
    from openmm import app

    params = _without_pme(water, tmp_path / "params")
    pos = app.PDBFile(str(params / "topology.pdb")).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    pos[3] = pos[0] + np.array([0.02, 0, 0])  # two oxygens 0.02 nm apart
    system = openmm.XmlSerializer.deserialize((params / "system.xml").read_text())
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    ctx.setPositions(pos)
    bad = ctx.getState(getPositions=True)
    # `err` below holds a traceback that holds this frame: free the Context now rather than in a
    # garbage-collected cycle, which may free its Integrator first
    del ctx
    with pytest.raises(SimulationError) as err:
        engine.run_stage(params, _stage("boom"), PROTO, REF, 300.0, 1, bad, tmp_path / "boom")
    msg = str(err.value)
    assert "stage boom" in msg and "step" in msg and "ps" in msg
    assert "no checkpoint was written" in msg and "\n" not in msg
    assert not (tmp_path / "boom" / "checkpoint.chk").exists()
    assert not (tmp_path / "boom" / "done.json").exists()


def _context_with(water, pos_nm):
    system = openmm.XmlSerializer.deserialize((water / "system.xml").read_text())
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    ctx.setPositions(pos_nm * unit.nanometer)
    return system, ctx


@pytest.mark.parametrize("kind", ["nan", "overlap"])
def test_bad_state_never_overwrites_a_good_checkpoint(water, tmp_path, kind):
    from openmm import app

    pos = app.PDBFile(str(water / "topology.pdb")).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    if kind == "nan":
        pos[5] = np.nan
    else:
        pos[3] = pos[0] + np.array([0.001, 0, 0])
    system, ctx = _context_with(water, pos)
    path = tmp_path / "checkpoint.chk"
    path.write_bytes(b"good checkpoint")
    with pytest.raises(SimulationError, match="step 40 .t = 0.080 ps.: (positions are NaN|potential energy)"):
        engine._write_checkpoint(ctx, path, [], engine._energy_limit(system), 40, 0.08, {"step": 40})
    assert path.read_bytes() == b"good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.chk"]


def test_stage_config_errors(water, tmp_path):
    with pytest.raises(ConfigError, match=r"ensemble.*'NVE'.*allowed values: 'NVT', 'NPT'"):
        engine.run_stage(water, _stage(ensemble="NVE"), PROTO, REF, 300.0, 1, None, tmp_path / "a")
    with pytest.raises(ConfigError, match="time_ps: 0.201 ps is not a whole number of 2.0 fs"):
        engine.run_stage(water, _stage(time_ps=0.201), PROTO, REF, 300.0, 1, None, tmp_path / "b")
    missing = next(n for n in ("CUDA", "OpenCL") if n not in available_platforms())
    with pytest.raises(SimulationError, match=f"'{missing}' is not available.*available platforms: .*Reference"):
        engine.run_stage(water, _stage(), PROTO, {"name": missing}, 300.0, 1, None, tmp_path / "c")
    assert not (tmp_path / "a").exists()


def test_stage_seed_is_positive_and_stage_specific():
    assert engine.stage_seed(0, "x") > 0
    assert engine.stage_seed(5, "nvt") != engine.stage_seed(5, "npt")
    assert engine.stage_seed(5, "nvt") == engine.stage_seed(5, "nvt")
    assert os.environ.get("OPENMM_CPU_THREADS") == "1"


def test_checkpoint_unit_is_a_frame_boundary_and_barostat_multiple():
    proto = {"timestep_fs": 4.0, "barostat_interval": 25}
    nvt = engine.stage_plan({"name": "a", "ensemble": "NVT", "time_ps": 10}, proto)
    assert (nvt["n_steps"], nvt["trajectory_interval"], nvt["checkpoint_unit"]) == (2500, 250, 250)
    npt = engine.stage_plan({"name": "a", "ensemble": "NPT", "time_ps": 10, "trajectory_interval_ps": 0.2}, proto)
    assert (npt["trajectory_interval"], npt["checkpoint_unit"]) == (50, 50)
    odd = engine.stage_plan({"name": "a", "ensemble": "NPT", "time_ps": 10, "trajectory_interval_ps": 0.12}, proto)
    assert odd["checkpoint_unit"] == 150  # lcm(30, 25)
    notraj = engine.stage_plan({"name": "a", "ensemble": "NVT", "time_ps": 10, "trajectory_interval_ps": 0,
                                "state_interval_ps": 0.4}, proto)
    assert (notraj["trajectory_interval"], notraj["checkpoint_unit"]) == (0, 100)


def test_killed_between_final_checkpoint_and_done_json_finishes_without_stepping(water, tmp_path, caplog):
    import logging

    out = tmp_path / "s"
    with caplog.at_level(logging.INFO, logger="spemd.pipeline.engine"):
        engine.run_stage(water, _stage(time_ps=0.08), PROTO, REF, 300.0, 1, None, out)
    assert any("stage s: step 40/40 (100.0%)" in r.getMessage() for r in caplog.records)  # progress line
    frames = _frames(out, water).xyz
    # what a kill right after the final checkpoint leaves: no state.xml, no done.json, and a record
    # not yet marked complete (the mark comes after state.xml)
    (out / "done.json").unlink()
    (out / "state.xml").unlink()
    record = json.loads((out / "checkpoint.json").read_text())
    assert record.pop("stage_complete") is True
    (out / "checkpoint.json").write_text(json.dumps(record))
    done = engine.run_stage(water, _stage(time_ps=0.08), PROTO, REF, 300.0, 1, None, out)
    assert done["resumed_from_step"] == 40 and done["steps_this_run"] == 0
    np.testing.assert_array_equal(_frames(out, water).xyz, frames)
    assert [int(r["Step"]) for r in _rows(out / "state.csv")] == [10, 20, 30, 40]


@pytest.mark.skipif("CPU" not in available_platforms(), reason="needs OpenMM's CPU platform")
def test_cpu_stage_grows_onto_idle_cores_and_goes_on_seamlessly(water, tmp_path, monkeypatch):
    from spemd.pipeline import platforms

    start = water.parent / "min" / "state.xml"
    cpu = {"name": "CPU"}
    stage = _stage(time_ps=0.2, traj=0.04, rows=0.02)
    plain = engine.run_stage(water, stage, PROTO, cpu, 300.0, 5, start, tmp_path / "plain")
    assert plain["cpu_threads_grown"] == [] and plain["device"] == "CPU, 1 threads"

    monkeypatch.setenv("SPEMD_MD_MAX_THREADS", "2")
    monkeypatch.setattr(platforms, "WIDEN_WINDOW_S", 0.0)
    monkeypatch.setattr(platforms, "idle_cpus_between", lambda a, b: 1.0)  # one CPU idle all along
    out = tmp_path / "grown"
    done = engine.run_stage(water, stage, PROTO, cpu, 300.0, 5, start, out)
    assert done["cpu_threads_grown"] == [{"step": 20, "threads": 2}]  # at the first frame boundary
    assert done["device"] == "CPU, 2 threads" and done["steps"] == 100
    assert [int(r["Step"]) for r in _rows(out / "state.csv")] == list(range(10, 101, 10))
    a, b = _frames(tmp_path / "plain", water), _frames(out, water)
    assert a.n_frames == b.n_frames == 5
    np.testing.assert_array_equal(a.xyz[0], b.xyz[0])  # the same run up to the change
    # afterwards a continuation of the same dynamics (one more thread only reorders float sums and
    # the random streams): temperatures stay physical, no jump at the change
    temps = np.array([float(r["Temperature (K)"]) for r in _rows(out / "state.csv")])
    assert np.all((temps > 150) & (temps < 450)), temps
    final = openmm.XmlSerializer.deserialize((out / "state.xml").read_text())
    assert final.getTime().value_in_unit(unit.picosecond) == pytest.approx(0.2)

    monkeypatch.setenv("SPEMD_MD_MAX_THREADS", "1")  # at its ceiling already: never grows
    assert engine.run_stage(water, stage, PROTO, cpu, 300.0, 5, start, tmp_path / "capped")["cpu_threads_grown"] == []
