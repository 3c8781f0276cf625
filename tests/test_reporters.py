"""pipeline.dcd and pipeline.reporters: file formats, truncation for resume, derived quantities."""

import struct
import warnings

import numpy as np
import openmm
import pytest
from openmm import app, unit

from spemd.pipeline import dcd
from spemd.errors import SimulationError
from spemd.pipeline.reporters import CSV_COLUMNS, box_mass, degrees_of_freedom, truncate_state_csv


def _pdb(path, n):
    top = app.Topology()
    chain = top.addChain()
    for _ in range(n):
        res = top.addResidue("NA", chain)
        top.addAtom("NA", app.Element.getBySymbol("Na"), res)
    box = [openmm.Vec3(2, 0, 0), openmm.Vec3(0, 2.5, 0), openmm.Vec3(0, 0, 3)]
    top.setPeriodicBoxVectors(box * unit.nanometer)
    with open(path, "w") as fh:
        app.PDBFile.writeFile(top, np.zeros((n, 3)) * unit.nanometer, fh)
    return np.array([[2, 0, 0], [0, 2.5, 0], [0, 0, 3.0]])


def _write(path, frames, box, interval=10, dt_ps=0.002, append=False):
    w = dcd.DCDWriter(path, frames.shape[1], dt_ps, first_step=interval, interval=interval, append=append)
    for f in frames:
        w.write(f, box)
    w.close()


def test_dcd_readable_by_mdtraj_and_mdanalysis(tmp_path):
    import MDAnalysis as mda
    import mdtraj

    box = _pdb(tmp_path / "t.pdb", 4)
    rng = np.random.default_rng(1)
    frames = rng.uniform(0, 2, size=(3, 4, 3))
    _write(tmp_path / "t.dcd", frames, box)
    traj = mdtraj.load_dcd(str(tmp_path / "t.dcd"), top=str(tmp_path / "t.pdb"))
    assert traj.n_frames == 3
    np.testing.assert_allclose(traj.xyz, frames, atol=1e-5)
    np.testing.assert_allclose(traj.unitcell_lengths[0], [2, 2.5, 3], rtol=1e-6)
    np.testing.assert_allclose(traj.unitcell_angles[0], [90, 90, 90], atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(str(tmp_path / "t.pdb"), str(tmp_path / "t.dcd"))
    times = [ts.time for ts in u.trajectory]
    np.testing.assert_allclose(times, [0.02, 0.04, 0.06], rtol=1e-5)
    u.trajectory[2]
    np.testing.assert_allclose(u.atoms.positions, 10 * frames[2], atol=1e-4)


def test_truncate_drops_later_and_partial_frames_then_append_continues(tmp_path):
    box = _pdb(tmp_path / "t.pdb", 5)
    rng = np.random.default_rng(2)
    frames = rng.uniform(0, 2, size=(6, 5, 3))
    path = tmp_path / "t.dcd"
    _write(path, frames[:4], box)  # frames at steps 10, 20, 30, 40
    with open(path, "ab") as fh:  # a frame half-written when the job was killed
        fh.write(b"\x00" * 50)
    assert dcd.read_header(path)["n_frames"] == 4
    assert dcd.truncate_dcd(path, 25) == 2  # steps 10 and 20 are at or before step 25
    info = dcd.read_header(path)
    assert info["n_frames"] == 2 and info["n_frames_header"] == 2
    with open(path, "rb") as fh:
        fh.seek(20)
        assert struct.unpack("<i", fh.read(4))[0] == 20
    _write(path, frames[2:], box, append=True)
    import mdtraj

    traj = mdtraj.load_dcd(str(path), top=str(tmp_path / "t.pdb"))
    np.testing.assert_allclose(traj.xyz, frames, atol=1e-5)
    assert dcd.read_header(path)["n_frames_header"] == 6


def test_truncate_refuses_when_frames_are_missing(tmp_path):
    box = _pdb(tmp_path / "t.pdb", 2)
    path = tmp_path / "t.dcd"
    _write(path, np.zeros((1, 2, 3)), box)
    with pytest.raises(SimulationError, match="cannot be resumed exactly"):
        dcd.truncate_dcd(path, 30)


def test_append_refuses_a_different_interval(tmp_path):
    box = _pdb(tmp_path / "t.pdb", 2)
    path = tmp_path / "t.dcd"
    _write(path, np.zeros((1, 2, 3)), box, interval=10)
    with pytest.raises(SimulationError, match="interval"):
        dcd.DCDWriter(path, 2, 0.002, first_step=20, interval=20, append=True)


def test_truncate_state_csv(tmp_path):
    path = tmp_path / "state.csv"
    rest = ",".join(["1"] * (len(CSV_COLUMNS) - 5))  # every column after the potential energy
    rows = [",".join(CSV_COLUMNS)] + [f"{0.02 * s:.6f},{s},300,300,-1,{rest}" for s in (10, 20, 30, 40)]
    path.write_text("\n".join(rows) + "\n" + "0.1,50,30")  # last row half written
    assert truncate_state_csv(path, 30) == 3
    lines = path.read_text().splitlines()
    assert [line.split(",")[1] for line in lines[1:]] == ["10", "20", "30"]
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SimulationError, match="unexpected columns"):
        truncate_state_csv(path, 30)


def test_dof_and_mass_count_massless_atoms_correctly():
    system = openmm.System()
    for m in (16.0, 1.0, 1.0, 0.0, 0.0):
        system.addParticle(m)
    system.addConstraint(0, 1, 0.1)
    system.addConstraint(0, 2, 0.1)
    system.addConstraint(3, 4, 0.2)  # between two fixed atoms: removes no degree of freedom
    system.addForce(openmm.CMMotionRemover())
    assert degrees_of_freedom(system) == 3 * 3 - 2 - 3
    top = app.Topology()
    chain = top.addChain()
    res = top.addResidue("X", chain)
    for sym in ("O", "H", "H", "Cu", "Fe"):
        top.addAtom(sym, app.Element.getBySymbol(sym), res)
    expected = 18.0 + app.Element.getBySymbol("Cu").mass.value_in_unit(unit.dalton) \
        + app.Element.getBySymbol("Fe").mass.value_in_unit(unit.dalton)
    assert box_mass(system, top).value_in_unit(unit.dalton) == pytest.approx(expected)
