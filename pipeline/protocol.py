"""What one MD run is made of: the force-field step's params folder and the plan of each stage.

:class:`Params` reads ``system.xml``, ``topology.pdb`` and ``forcefield.json``; :func:`stage_plan` turns a
stage's config (ps) into steps and intervals; :func:`stage_temperature` and :func:`stage_seed` give the
thermostat temperature (constant or ramp) and the per-stage random seed; :func:`wall_budget_seconds` the
wall-clock budget of a call; :func:`stage_config` and :func:`start_state_sha256` what a stage's trajectory
depends on, hashed into its ``inputs`` record (:mod:`pipeline.stagefolder`). The engine
(:mod:`pipeline.engine`) runs what these describe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import zlib
from pathlib import Path

import openmm
from openmm import app

from spemd.errors import ConfigError, InputError, one_of
from spemd.forcefields.library import check_system_xml
from spemd.pipeline.equilibration import check_stage as check_until
from spemd.provenance import sha256_file

log = logging.getLogger(__name__)

#: seconds kept in hand when the budget comes from SLURM_JOB_END_TIME
SLURM_END_MARGIN_S = 300.0

PROTOCOL_DEFAULTS = {
    "timestep_fs": 4.0,
    "friction_per_ps": 1.0,
    "pressure_bar": 1.0,
    "barostat_interval": 25,
    "checkpoint_minutes": 10.0,
    "minimise_max_iterations": 2000,
}
STAGE_DEFAULTS = {"trajectory_interval_ps": 1.0, "state_interval_ps": 1.0}
ENSEMBLES = ("NVT", "NPT")


class Params:
    """The force-field step's outputs: System, Topology, positions, box and forcefield.json."""

    def __init__(self, params_dir):
        params_dir = Path(params_dir)
        self.dir = params_dir
        self.system_path = params_dir / "system.xml"
        self.topology_path = params_dir / "topology.pdb"
        self.meta_path = params_dir / "forcefield.json"
        for p in (self.system_path, self.topology_path, self.meta_path):
            if not p.is_file():
                raise InputError(f"{p}: missing; run the force-field step first")
        check_system_xml(self.system_path)
        try:
            self.system = openmm.XmlSerializer.deserialize(self.system_path.read_text())
        except Exception as exc:
            raise InputError(f"{self.system_path}: not a serialized openmm.System ({exc})") from None
        if not isinstance(self.system, openmm.System):
            raise InputError(f"{self.system_path}: holds a {type(self.system).__name__}, not an openmm.System")
        pdb = app.PDBFile(str(self.topology_path))
        self.topology = pdb.topology
        self.positions = pdb.getPositions(asNumpy=True)
        self.meta = json.loads(self.meta_path.read_text())
        if self.topology.getNumAtoms() != self.system.getNumParticles():
            raise InputError(
                f"{self.topology_path}: {self.topology.getNumAtoms()} atoms but system.xml has "
                f"{self.system.getNumParticles()} particles"
            )
        box = self.topology.getPeriodicBoxVectors()
        self.box = box if box is not None else self.system.getDefaultPeriodicBoxVectors()
        self.has_mof_slab = bool(self.meta.get("has_mof_slab", False))
        self.mof_atom_indices = [int(i) for i in self.meta.get("mof_atom_indices", []) or []]
        if self.has_mof_slab and not self.mof_atom_indices:
            raise InputError(f"{self.meta_path}: has_mof_slab is true but mof_atom_indices is empty")

    def input_files(self):
        return [self.system_path, self.topology_path, self.meta_path]

    def forcefield_files(self) -> dict:
        """{xml name: SHA-256} of the force-field files the System was built from (forcefield.json)."""
        return forcefield_hashes(self.meta)


def forcefield_hashes(meta: dict) -> dict:
    """{xml name: SHA-256} from a forcefield.json (a bare list of names, as in the test systems: no hashes)."""
    files = meta.get("xml_files") or {}
    return dict(files) if isinstance(files, dict) else {str(f): None for f in files}


def _with_defaults(section: dict | None, defaults: dict) -> dict:
    out = dict(defaults)
    out.update({k: v for k, v in (section or {}).items() if v is not None})
    return out


def _steps(value_ps: float, dt_fs: float, key: str) -> int:
    """A time in ps as a whole number of steps (ConfigError if it is not one)."""
    exact = value_ps * 1000.0 / dt_fs
    n = int(round(exact))
    if abs(exact - n) > 1e-6 * max(1.0, exact):
        raise ConfigError(f"{key}: {value_ps} ps is not a whole number of {dt_fs} fs time steps")
    return n


def stage_plan(stage: dict, protocol: dict) -> dict:
    """Steps, intervals (steps) and ensemble of one stage; ConfigError for bad values."""
    stage = _with_defaults(stage, STAGE_DEFAULTS)
    protocol = _with_defaults(protocol, PROTOCOL_DEFAULTS)
    name = stage.get("name")
    if not name:
        raise ConfigError("protocol.stages: every stage needs a name")
    key = f"protocol.stages.{name}"
    if stage.get("ensemble") not in ENSEMBLES:
        raise ConfigError(one_of(f"{key}.ensemble", stage.get("ensemble"), ENSEMBLES))
    if "time_ps" not in stage or stage["time_ps"] <= 0:
        raise ConfigError(f"{key}.time_ps: required and must be > 0")
    check_until(stage, key)
    dt_fs = float(protocol["timestep_fs"])
    n_steps = _steps(float(stage["time_ps"]), dt_fs, f"{key}.time_ps")
    traj = _steps(float(stage["trajectory_interval_ps"]), dt_fs, f"{key}.trajectory_interval_ps")
    if stage["state_interval_ps"] <= 0:
        raise ConfigError(f"{key}.state_interval_ps: {stage['state_interval_ps']!r} is out of range; must be > 0")
    rows = _steps(float(stage["state_interval_ps"]), dt_fs, f"{key}.state_interval_ps")
    if n_steps < 1 or rows < 1 or (stage["trajectory_interval_ps"] > 0 and traj < 1):
        raise ConfigError(f"{key}: time_ps and intervals must be at least one {dt_fs} fs step")
    return {
        "name": name,
        "ensemble": stage["ensemble"],
        "n_steps": n_steps,
        "trajectory_interval": traj,  # 0 = no trajectory
        "state_interval": rows,
        # Checkpoints only at frame boundaries, so that truncating the trajectory on resume is exact,
        # and for NPT also at multiples of the barostat interval: the barostat's move counter is not
        # part of an OpenMM checkpoint and restarts at zero, so this keeps the moves on the same steps.
        "checkpoint_unit": math.lcm(traj if traj > 0 else rows,
                                    int(protocol["barostat_interval"]) if stage["ensemble"] == "NPT" else 1),
        "dt_fs": dt_fs,
    }


def stage_temperature(stage: dict, default_K: float, step: int, n_steps: int) -> float:
    """Thermostat temperature (K) at `step`: constant, or a linear ramp for ``[start, end]``.

    Absent, None or the word "run" (also inside a ramp) mean the run's temperature `default_K`.
    """
    key = f"protocol.stages.{stage.get('name')}.temperature_K"

    def kelvin(v):
        if v is None or v == "run":
            return float(default_K)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"{key}: {v!r} is not allowed; allowed values: a temperature > 0, 'run', or [start, end]")
        return float(v)

    t = stage.get("temperature_K", default_K)
    if isinstance(t, (list, tuple)):
        if len(t) != 2:
            raise ConfigError(f"{key}: a ramp is [start, end], got {t!r}")
        start, end = kelvin(t[0]), kelvin(t[1])
        frac = min(max(step / n_steps, 0.0), 1.0) if n_steps > 0 else 1.0
        return start + (end - start) * frac
    return kelvin(t)


def stage_seed(seed: int, stage_name: str) -> int:
    """A positive 31-bit seed for one stage (OpenMM treats 0 as 'pick one at random')."""
    value = (int(seed) * 1_000_003 + zlib.crc32(stage_name.encode())) % (2**31 - 1)
    return value or 1


def wall_budget_seconds(max_wall_seconds: float | None) -> float | None:
    """The wall-clock budget of this call: argument, SPEMD_MAX_WALL_SECONDS, SLURM_JOB_END_TIME - margin."""
    if max_wall_seconds is not None:
        return float(max_wall_seconds)
    env = os.environ.get("SPEMD_MAX_WALL_SECONDS")
    if env:
        try:
            return float(env)
        except ValueError:
            raise ConfigError(f"SPEMD_MAX_WALL_SECONDS: {env!r} is not a number of seconds") from None
    end = os.environ.get("SLURM_JOB_END_TIME") or _slurm_end_time_from_squeue()
    if end:
        try:
            return max(float(end) - time.time() - SLURM_END_MARGIN_S, 0.0)
        except ValueError:
            log.warning("SLURM_JOB_END_TIME=%r is not a Unix time; no wall-clock budget", end)
    return None


def _slurm_end_time_from_squeue() -> str | None:
    """The job's end time (Unix seconds) from squeue, for Slurm versions that do not export SLURM_JOB_END_TIME."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    import datetime
    import subprocess

    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True, timeout=30)
        stamp = datetime.datetime.fromisoformat(out.stdout.strip())  # local time, as squeue prints it
    except (OSError, subprocess.SubprocessError, ValueError):
        log.warning("inside Slurm job %s but its end time is unknown (squeue); no wall-clock budget", job)
        return None
    return str(stamp.timestamp())


def load_start_state(start_state, params: Params):
    """(positions, box) from a State, a state.xml path, or None (= params/topology.pdb)."""
    if start_state is None:
        return params.positions, params.box
    if isinstance(start_state, (str, os.PathLike)):
        path = Path(start_state)
        if not path.is_file():
            raise InputError(f"{path}: start state not found; run the previous stage first")
        try:
            start_state = openmm.XmlSerializer.deserialize(path.read_text())
        except Exception as exc:
            raise InputError(f"{path}: not a serialized openmm.State ({exc})") from None
    if not isinstance(start_state, openmm.State):
        raise InputError(f"start_state: expected a State, a state.xml path or None, got {type(start_state).__name__}")
    positions = start_state.getPositions(asNumpy=True)
    if len(positions) != params.system.getNumParticles():
        raise InputError(
            f"start_state: {len(positions)} atoms but {params.system_path} has {params.system.getNumParticles()}"
        )
    return positions, start_state.getPeriodicBoxVectors()


def stage_config(stage: dict, protocol: dict, temperature_K: float, seed: int) -> dict:
    """What a stage's trajectory depends on besides system.xml and its start state (hashed into "inputs").

    The other stages and checkpoint_minutes (when checkpoints are written) are left out: changing them
    does not change this stage's trajectory."""
    t = stage.get("temperature_K")
    # the same run whether the CLI wrote in the run's temperature for "run" or left it to this module
    if isinstance(t, (list, tuple)):
        t = [float(temperature_K) if v in (None, "run") else v for v in t]
    elif t is None or t == "run":
        t = float(temperature_K)
    return {
        "stage": {**stage, "temperature_K": t},
        "protocol": {k: v for k, v in protocol.items() if k not in ("stages", "checkpoint_minutes")},
        "temperature_K": float(temperature_K),
        "seed": int(seed),
    }


def start_state_sha256(start_state, params: Params) -> str:
    """SHA-256 of the start state: the state.xml file, a serialized State, or params/topology.pdb (None)."""
    if start_state is None:
        return sha256_file(params.topology_path)
    if isinstance(start_state, openmm.State):
        return hashlib.sha256(openmm.XmlSerializer.serialize(start_state).encode()).hexdigest()
    path = Path(start_state)
    if not path.is_file():
        raise InputError(f"{path}: start state not found; run the previous stage first")
    return sha256_file(path)
