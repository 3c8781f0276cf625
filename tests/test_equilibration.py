"""until: density_plateau stages (pipeline/equilibration.py + the engine hook) and the electrolyte columns of state.csv."""

import csv
import json

import numpy as np
import openmm
import pytest
from openmm import unit

from spemd.errors import ConfigError
from spemd.pipeline import engine
from spemd.pipeline.equilibration import DensityPlateau, check_stage, set_volume
from spemd.pipeline.reporters import CSV_COLUMNS
from spemd.pipeline.testsystems import water_params

REF = {"name": "Reference"}
PROTO = {"timestep_fs": 2.0, "friction_per_ps": 1.0, "pressure_bar": 1.0, "barostat_interval": 5,
         "checkpoint_minutes": 10, "minimise_max_iterations": 100}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OPENMM_CPU_THREADS", "1")
    for var in ("SPEMD_MAX_WALL_SECONDS", "SLURM_JOB_END_TIME"):
        monkeypatch.delenv(var, raising=False)


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _state_csv(path, density):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for k, rho in enumerate(density):
            row = {c: "1" for c in CSV_COLUMNS}
            row.update({"Time (ps)": f"{k + 1:.1f}", "Step": str(k + 1), "Volume (nm^3)": f"{10.0 / rho:.6f}",
                        "Electrolyte Density (g/mL)": f"{rho:.6f}", "Density (g/mL)": "0.5"})
            w.writerow([row[c] for c in CSV_COLUMNS])


def test_stage_keys_are_checked():
    with pytest.raises(ConfigError, match="until.*allowed values: density_plateau"):
        check_stage({"ensemble": "NPT", "time_ps": 1, "until": "forever", "max_time_ps": 2}, "s")
    with pytest.raises(ConfigError, match="needs ensemble NPT"):
        check_stage({"ensemble": "NVT", "time_ps": 1, "until": "density_plateau", "max_time_ps": 2}, "s")
    with pytest.raises(ConfigError, match="max_time_ps"):
        check_stage({"ensemble": "NPT", "time_ps": 2, "until": "density_plateau", "max_time_ps": 1}, "s")
    with pytest.raises(ConfigError, match="max_time_ps: only with until"):
        check_stage({"ensemble": "NPT", "time_ps": 2, "max_time_ps": 3}, "s")


def test_plateau_decision_uses_the_electrolyte_density_and_the_study_test(tmp_path):
    path = tmp_path / "state.csv"
    stage = {"until": "density_plateau", "max_time_ps": 0.05}
    p = DensityPlateau(stage, chunk_steps=10, dt_fs=1.0, unit_steps=5, state_csv=path)
    assert p.max_steps == 50
    rng = np.random.default_rng(1)
    _state_csv(path, np.linspace(1.0, 1.1, 40) + 1e-4 * rng.standard_normal(40))  # +5 % over the window
    assert p.next_end(40) == 50  # drifting: one more chunk (the whole-box column, flat at 0.5, is ignored)
    assert p.checks[-1]["verdict"] == "no" and p.checks[-1]["column"] == "Electrolyte Density (g/mL)"
    assert p.next_end(50) is None and not p.converged  # max_time_ps reached
    _state_csv(path, 1.1 + 1e-4 * rng.standard_normal(40))
    assert p.next_end(40) is None and p.converged
    rec = p.record(40, p.window_mean_volume_nm3())
    assert rec["time_to_plateau_ps"] == pytest.approx(0.04)
    assert rec["start_volume_for_next_stage_nm3"] == pytest.approx(10.0 / 1.1, rel=1e-3)


def test_resumed_until_stage_redoes_its_earlier_checks_and_runs_to_the_chunk_end(tmp_path):
    """A stage stopped mid-chunk (exit 75) and resumed keeps the checks it made and decides where the
    uninterrupted run would have: at the end of the chunk it was in."""
    path = tmp_path / "state.csv"
    stage = {"until": "density_plateau", "max_time_ps": 0.06}
    rng = np.random.default_rng(2)
    _state_csv(path, np.linspace(1.0, 1.2, 60) + 1e-4 * rng.standard_normal(60))  # drifting throughout
    straight = DensityPlateau(stage, chunk_steps=10, dt_fs=1.0, unit_steps=5, state_csv=path)
    assert [straight.next_end(e) for e in (10, 20, 30)] == [20, 30, 40]
    resumed = DensityPlateau(stage, chunk_steps=10, dt_fs=1.0, unit_steps=5, state_csv=path)
    assert resumed.resume(35) == 40
    assert resumed.checks == straight.checks  # each from the rows up to its own step, not the whole file
    assert straight.checks[0]["density_g_cm3"] != straight.checks[2]["density_g_cm3"]
    at_end = DensityPlateau(stage, chunk_steps=10, dt_fs=1.0, unit_steps=5, state_csv=path)
    assert at_end.resume(30) == 30 and at_end.checks == straight.checks[:2]  # the check at 30 is the run's own


def test_set_volume_scales_molecule_centres_z_only():
    system = openmm.System()
    for _ in range(4):
        system.addParticle(1.0)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.1, 1000.0)  # one molecule of two atoms, two single atoms
    system.addForce(bond)
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(2, 0, 0), openmm.Vec3(0, 2, 0), openmm.Vec3(0, 0, 4))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    pos = np.array([[0.5, 0.5, 1.0], [0.5, 0.5, 1.1], [1.0, 1.0, 2.0], [1.5, 1.5, 3.0]])
    ctx.setPositions(pos)
    set_volume(ctx, 2 * 2 * 5.0, z_only=True)
    st = ctx.getState(getPositions=True)
    new = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    box = st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.diag(box) == pytest.approx([2, 2, 5])
    assert new[:, :2] == pytest.approx(pos[:, :2])
    assert new[1, 2] - new[0, 2] == pytest.approx(0.1)  # the molecule moved whole
    assert new[0, 2] + 0.05 == pytest.approx(1.05 * 1.25)  # its centre scaled by 5/4
    assert new[2:, 2] == pytest.approx([2.5, 3.75])


@pytest.fixture(scope="module")
def slab(tmp_path_factory):
    d = water_params(tmp_path_factory.mktemp("slab") / "params", slab_grid=3, height_nm=2.0)
    engine.minimise(d, PROTO, REF, d.parent / "min")
    return d


def test_until_stage_extends_records_and_ends_at_the_window_mean_volume(slab, tmp_path):
    out = tmp_path / "eq"
    stage = {"name": "eq", "ensemble": "NPT", "time_ps": 0.1, "trajectory_interval_ps": 0, "state_interval_ps": 0.01,
             "until": "density_plateau", "max_time_ps": 0.3}
    done = engine.run_stage(slab, stage, PROTO, {"name": "CPU"}, 300.0, 2, slab.parent / "min" / "state.xml", out)
    eq = done["equilibration"]
    rows = _rows(out / "state.csv")
    n = len(eq["checks"])
    assert 1 <= n <= 3 and done["steps"] == 50 * n  # 0.1 ps chunks of 50 steps, at most 0.3 ps
    assert len(rows) == 10 * n
    assert eq["converged"] == (eq["checks"][-1]["verdict"] == "yes")
    if not eq["converged"]:
        assert n == 3  # stopped by max_time_ps
    v = np.array([float(r["Volume (nm^3)"]) for r in rows])
    assert eq["start_volume_for_next_stage_nm3"] == pytest.approx(v[len(v) // 2:].mean(), rel=1e-6)
    final = openmm.XmlSerializer.deserialize((out / "state.xml").read_text())
    box = final.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    assert abs(np.linalg.det(box)) == pytest.approx(eq["start_volume_for_next_stage_nm3"], rel=1e-5)
    assert np.diag(box)[:2] == pytest.approx([1.3, 1.3])  # z only with a slab
    meta = json.loads((slab / "forcefield.json").read_text())
    assert meta["has_mof_slab"]
    assert "Electrolyte Volume (nm^3)" not in rows[-1]


def test_electrolyte_column_of_a_slab_box_is_its_film_centre_density(slab, tmp_path):
    """The reporter's electrolyte density, recomputed by hand: atoms beyond the two Cu layers' clearance."""
    import openmm.app as app

    from spemd.pipeline.reporters import StateCSVReporter
    from spemd.slab import FILM_CENTRE_CLEARANCE_NM

    top = app.PDBFile(str(slab / "topology.pdb")).topology
    system = openmm.XmlSerializer.deserialize((slab / "system.xml").read_text())
    state0 = openmm.XmlSerializer.deserialize((slab.parent / "min" / "state.xml").read_text())
    sim = app.Simulation(top, system, openmm.LangevinMiddleIntegrator(300, 1, 0.002),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setState(state0)
    rep = StateCSVReporter(tmp_path / "state.csv", 1, 1, system, top, 1e9 * unit.kilojoule_per_mole)
    rep.describeNextReport(sim)
    state = sim.context.getState(getEnergy=True, getPositions=True)
    rep.report(sim, state)
    rep.close()
    row = _rows(tmp_path / "state.csv")[0]
    pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    height = state.getPeriodicBoxVectors()[2][2].value_in_unit(unit.nanometer)
    is_slab = np.array([a.residue.name == "CU" for a in top.atoms()])
    zs = pos[is_slab, 2]
    band = (zs.max() + FILM_CENTRE_CLEARANCE_NM, zs.min() + height - FILM_CENTRE_CLEARANCE_NM)
    z = pos[~is_slab, 2]
    z = np.where(z < zs.min(), z + height, z)  # the film runs from the upper Cu layer across z = height
    inside = (z >= band[0]) & (z < band[1])
    mass = sum(a.element.mass.value_in_unit(unit.dalton) for a, keep in zip(
        [a for a in top.atoms() if a.residue.name != "CU"], inside) if keep)
    expected = mass * 1.66053906660e-24 / (1.3**2 * (band[1] - band[0]) * 1e-21)
    assert float(row["Electrolyte Density (g/mL)"]) == pytest.approx(expected, rel=1e-5)
    assert 0.8 < expected < 1.2  # water's film centre
