"""OpenCL against CPU, a staged run on OpenCL, and the child-process probe of `auto` (pipeline/probe.py).

CI installs Debian's POCL (`pocl-opencl-icd`), an OpenCL runtime on the CPU, so that the GPU code path
runs on every CI run. Its minimiser crashes (SIGSEGV in OpenMM's `getScale` kernel) while energies,
forces and MD steps work; the probe tests cover both that real crash and simulated ones.
Systems are tiny: POCL compiles every kernel on the CPU, which dominates these tests' time.
"""

import json
import math
import sys
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from spemd.errors import SimulationError
from spemd.forcefields.parametrise import METAL_TYPES, TFSI_O_TYPE, create_system
from spemd.pipeline import engine, platforms
from spemd.pipeline.probe import ENERGY_REL_TOL, FORCE_REL_TOL, compare
from spemd.pipeline.testsystems import water_params
from spemd.systems import molecules
from spemd.systems.build import _append

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    "OpenCL" not in platforms.available_platforms(),
    reason="no OpenCL platform on this machine (CI installs pocl-opencl-icd; see .ci/run)",
)
FF = {"charge_scale": 0.8, "nonbonded_cutoff_nm": 0.9, "hydrogen_mass_amu": None,
      "metal_o_tfsi": {"FeNi": {"sigma_nm": 0.28, "epsilon_kj_mol": 2.5, "c4_kJ_nm4_per_mol": 0.004}}}  # the Fe of the Fe-Ni slab


@pytest.fixture(scope="module")
def composite():
    return _composite()


def _composite():
    """Fe-Ni MOF slab + 2 Na + 2 TFSI, one TFSI O at 0.25 nm from an Fe (so the pair override matters)."""
    from spemd.systems.mof import build_slab

    slab = build_slab("FeNi", (1, 1, 1))
    top = app.Topology()
    _append(top, slab.topology)
    parts = [slab.positions_nm]
    z = slab.thickness_nm
    for k in range(2):
        na, tf = molecules.sodium(), molecules.tfsi()
        _append(top, na.topology)
        _append(top, tf.topology)
        parts += [na.positions_nm + [0.6 + k, 0.7, z + 0.9], tf.positions_nm + [0.4 + k, 0.3 + k, z + 1.8]]
    xyz = np.vstack(parts)
    top.setPeriodicBoxVectors(np.diag([slab.box_x_nm, slab.box_y_nm, z + 3.0]) * u.nanometer)
    system, info = create_system(top, FF)
    types = info["particle_types"]
    box = np.array([slab.box_x_nm, slab.box_y_nm, z + 3.0])
    tfsi0 = [i for i, a in enumerate(top.atoms()) if a.residue.name == "TFS"][:15]
    rest = np.setdiff1d(np.arange(len(xyz)), tfsi0)

    def clearance(moved):  # closest approach of the moved TFSI to any other atom (minimum image)
        d = moved[:, None] - xyz[rest][None]
        d -= box * np.round(d / box)
        return np.linalg.norm(d, axis=2).min()

    # an O of the first TFSI 0.3 nm above an Fe, choosing the Fe and O that keep the TFSI clear of the rest
    # (a near-overlap would overflow the GPU platforms' fixed-point force sums, which is not what is tested)
    shifts = [xyz[fe] + [0.0, 0.0, 0.3] - xyz[o] for fe in np.flatnonzero(np.array(types) == METAL_TYPES["FeNi"])
              for o in tfsi0 if types[o] == TFSI_O_TYPE]
    best = max(shifts, key=lambda s: clearance(xyz[tfsi0] + s))
    xyz[tfsi0] += best
    assert clearance(xyz[tfsi0]) > 0.15
    return top, system, info, xyz


def _groups(system):
    """Each force in its own group; {name: group}."""
    names = {}
    for k, f in enumerate(system.getForces()):
        f.setForceGroup(k)
        names[f.getName() or type(f).__name__] = k
    return names


def _state(system, xyz, name, props, groups=None):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name), props)
    ctx.setPositions(xyz * u.nanometer)
    out = {}
    for key, g in (groups or {"total": None}).items():
        s = ctx.getState(getEnergy=True, getForces=True, **({} if g is None else {"groups": {g}}))
        out[key] = (s.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole),
                    s.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer))
    del ctx
    return out


def _table_form(system, info):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from lj_forms import table_form
    finally:
        sys.path.pop(0)
    return table_form(system, info, FF)


def test_opencl_energies_and_forces_match_cpu_per_force(composite):
    _, system, info, xyz = composite
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    groups = _groups(system)
    assert {"LJGeometric", "LJPairOverrides", "NonbondedForce"} <= set(groups)
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nb.getNonbondedMethod() == openmm.NonbondedForce.PME
    cpu = _state(system, xyz, "CPU", {"Threads": "1"}, groups)
    ocl = _state(system, xyz, "OpenCL", {"Precision": "mixed"}, groups)
    errors = {}
    for key in ("NonbondedForce", "LJGeometric", "LJPairOverrides"):
        (e0, f0), (e1, f1) = cpu[key], ocl[key]
        assert np.abs(f0).max() > 1.0  # each force contributes something to compare
        errors[key] = compare(e1, f1, e0, f0)
    # the former per-type table form (benchmarks/lj_forms.py) of the same LJ + pair overrides
    table = _table_form(create_system(composite[0], {**FF, "metal_o_tfsi": None})[0], info)
    tg = {"LJTables": _groups(table)["LJTables"]}
    (e0, f0), (e1, f1) = _state(table, xyz, "CPU", {"Threads": "1"}, tg)["LJTables"], _state(table, xyz, "OpenCL", {"Precision": "mixed"}, tg)["LJTables"]
    errors["LJTables"] = compare(e1, f1, e0, f0)
    print("OpenCL mixed vs CPU (energy rel. error, max force error / RMS force):", errors)
    for key, (e_err, f_err) in errors.items():
        assert e_err <= ENERGY_REL_TOL and f_err <= FORCE_REL_TOL, (key, e_err, f_err)


@pytest.mark.parametrize("precision, tol", [("single", FORCE_REL_TOL), ("double", 1e-4)])
def test_opencl_precisions_match_cpu(composite, precision, tol):
    _, system, _, xyz = composite
    ref = _state(system, xyz, "Reference", {})["total"]
    got = _state(system, xyz, "OpenCL", {"Precision": precision})["total"]
    e_err, f_err = compare(got[0], got[1], *ref)
    print(f"OpenCL {precision} vs Reference: energy {e_err:.2g}, forces {f_err:.2g}")
    assert e_err <= ENERGY_REL_TOL and f_err <= tol


PROTO = {"timestep_fs": 2.0, "checkpoint_minutes": 1e-6}
STAGE = {"name": "prod", "ensemble": "NVT", "time_ps": 0.16, "trajectory_interval_ps": 0.04, "state_interval_ps": 0.02}
OCL = {"name": "OpenCL", "precision": "mixed"}


class Stop(Exception):
    pass


def test_staged_run_on_opencl_checkpoints_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEMD_CACHE_DIR", str(tmp_path / "cache"))
    params = water_params(tmp_path / "params", box_nm=1.2, cutoff_nm=0.5)
    full = engine.run_stage(params, STAGE, PROTO, OCL, 300.0, 3, None, tmp_path / "full")
    assert full["platform"] == "OpenCL" and full["platform_choice"]["probes"][0]["passed"]

    def stop_at_40(step):
        if step == 40:
            raise Stop
    monkeypatch.setattr(engine, "_after_checkpoint", stop_at_40)
    with pytest.raises(Stop):
        engine.run_stage(params, STAGE, PROTO, OCL, 300.0, 3, None, tmp_path / "split")
    monkeypatch.setattr(engine, "_after_checkpoint", None)
    assert json.loads((tmp_path / "split" / "checkpoint.json").read_text())["platform"] == "OpenCL"
    done = engine.run_stage(params, STAGE, PROTO, OCL, 300.0, 3, None, tmp_path / "split")
    assert done["resumed_from_step"] == 40 and done["trajectory_frames"] == full["trajectory_frames"] == 4
    a = mdtraj.load_dcd(str(tmp_path / "full" / "trajectory.dcd"), top=str(params / "topology.pdb"))
    b = mdtraj.load_dcd(str(tmp_path / "split" / "trajectory.dcd"), top=str(params / "topology.pdb"))
    # OpenCL sums forces in fixed point: a resumed run repeats the uninterrupted one
    np.testing.assert_allclose(a.xyz, b.xyz, atol=1e-5)
    assert math.isclose(done["final_potential_energy_kj_mol"], full["final_potential_energy_kj_mol"], rel_tol=1e-5)


@pytest.fixture
def water(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEMD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENMM_CPU_THREADS", "1")
    p = engine.Params(water_params(tmp_path / "params", box_nm=1.2, cutoff_nm=0.5))
    return p.system_path, p.positions, p.box


def test_auto_skips_a_crashing_platform_with_the_reason(water, monkeypatch):
    monkeypatch.setenv("SPEMD_PROBE_FAULT", "OpenCL=segv")
    choice = platforms.choose_platform({"name": "auto"}, *water)
    assert choice.platform.getName() == "CPU"
    record = choice.record()
    assert record["skipped"] == [{"platform": "OpenCL", "reason": "crashed with SIGSEGV in the minimiser"}]
    # the comparison before the crash is kept: OpenCL agreed with CPU
    assert record["probes"][0]["force_max_rel_err"] <= FORCE_REL_TOL


def test_auto_on_the_real_opencl_matches_its_probe(water):
    # POCL 3.1's minimiser crashes; a fixed POCL (or a GPU) passes: either way auto follows the probe
    choice = platforms.choose_platform({"name": "auto"}, *water)
    probe = choice.record()["probes"][0]
    assert probe["platform"] == "OpenCL" and not probe["cached"]
    assert (choice.platform.getName() == "OpenCL") == probe["passed"]
    if not probe["passed"]:
        assert probe["reason"].startswith("crashed with SIG") or "disagrees" in probe["reason"]
    again = platforms.choose_platform({"name": "auto"}, *water).record()["probes"][0]
    assert again["cached"] and again["passed"] == probe["passed"]  # the second job reads the cache


def test_named_platform_that_hangs_or_disagrees_stops_in_one_line(water, monkeypatch):
    monkeypatch.setenv("SPEMD_PROBE_TIMEOUT_S", "8")
    monkeypatch.setenv("SPEMD_PROBE_FAULT", "OpenCL=hang")
    with pytest.raises(SimulationError) as err:
        platforms.choose_platform(OCL, *water, operations=("energy", "md"))
    assert "'OpenCL' failed the probe" in str(err.value) and "hung: still running after 8 s, in creating the Context" in str(err.value)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("SPEMD_PROBE_FAULT", "OpenCL=wrong")
    with pytest.raises(SimulationError, match=r"'OpenCL' failed the probe.*disagrees with CPU: energy error 0\.1 "):
        platforms.choose_platform(OCL, *water, operations=("energy", "md"))
