"""Run the MD protocol: energy minimisation and resumable, checkpointed MD stages.

Inputs are the force-field step's ``params/`` folder (``system.xml``, ``topology.pdb``,
``forcefield.json``). Each stage folder receives ``trajectory.dcd``, ``state.csv``, ``checkpoint.chk``,
``state.xml`` and, last, ``done.json``, whose presence means "stage finished".

Restart model
-------------
Checkpoints are written every ``protocol.checkpoint_minutes`` of wall time, always at a step that is a
multiple of the trajectory-frame interval (the state-row interval when there is no trajectory), after
the reporters of that step have written and flushed. A stage folder with ``checkpoint.chk`` and no
``done.json`` is resumed: the checkpoint is loaded, ``trajectory.dcd`` and ``state.csv`` are cut back to
the frames/rows at or before the checkpoint's step and appended to, so the finished files are what an
uninterrupted run would have written (same frames, same time axis, no duplicates, no gaps).

A wall-clock budget (argument, ``SPEMD_MAX_WALL_SECONDS``, or ``SLURM_JOB_END_TIME`` minus a margin)
makes a stage stop at a frame boundary with a fresh checkpoint before the budget runs out and raise
:class:`StageIncomplete` ("rerun to continue"), which the CLI maps to exit code 75. SIGTERM, SIGINT and
SIGUSR1 (Slurm's warning signal, ``--signal=B:USR1@300``) do the same at the next frame boundary; a
second signal exits at once.

Every ``checkpoint.chk`` has a sidecar ``checkpoint.json`` (step, time step, atom count, platform,
OpenMM version, SHA-256 of the checkpoint), both written under temporary names and renamed. A resume
verifies the pair first and stops with one line naming the file and what differs.

Velocities and the thermostat/barostat random streams are seeded at the start of the first run of a
stage from ``seed`` and the stage name (:func:`stage_seed`), so stages of one replica get independent
streams while the same seed reproduces the same run on a deterministic platform.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from spemd.pipeline.dcd import truncate_dcd
from spemd.errors import ConfigError, InputError, SimulationError, StageIncomplete, one_of
from spemd.files import atomic_path, write_json_atomic, write_text_atomic
from spemd.pipeline.platforms import IdleCoreWidening, describe_context, max_cpu_threads, select_platform
from spemd.pipeline.equilibration import DensityPlateau, check_stage as check_until
from spemd.pipeline.equilibration import is_z_only as barostat_is_z_only, set_volume as set_plateau_volume
from spemd.provenance import provenance, sha256_file
from spemd.pipeline.reporters import (
    BlowUp,
    DCDTrajectoryReporter,
    ProgressLogReporter,
    StateCSVReporter,
    truncate_state_csv,
)

log = logging.getLogger(__name__)

#: |potential energy| per atom beyond which a run counts as exploded (kJ/mol).
ENERGY_LIMIT_PER_ATOM_KJ_MOL = 1.0e5
#: seconds kept in hand when the budget comes from SLURM_JOB_END_TIME
SLURM_END_MARGIN_S = 300.0
#: at most this many steps between temperature updates of an annealing ramp
RAMP_UPDATE_MAX_STEPS = 250
#: wall seconds between progress lines in the log
PROGRESS_LOG_SECONDS = 60.0

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

#: signals that make a running stage checkpoint at the next frame boundary and exit 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

# Test hook: called as _after_checkpoint(step) after every checkpoint write (tests kill the process here).
_after_checkpoint = None


__all__ = ["StageIncomplete", "minimise", "run_stage", "stage_plan", "verify_checkpoint"]


# --------------------------------------------------------------------------------------------- inputs


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


def _energy_limit(system) -> unit.Quantity:
    return ENERGY_LIMIT_PER_ATOM_KJ_MOL * max(system.getNumParticles(), 1) * unit.kilojoule_per_mole


def _finite(x) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _load_start_state(start_state, params: Params):
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


# --------------------------------------------------------------------------------------- minimisation


def minimise(params_dir, protocol: dict, platform_cfg: dict, out_dir) -> dict:
    """Local energy minimisation of params/topology.pdb; writes out_dir/state.xml and done.json.

    Massless (fixed) atoms stay where they are. A finished folder (done.json present) is not redone.
    """
    out_dir = Path(out_dir)
    done_path = out_dir / "done.json"
    if done_path.is_file():
        log.info("minimise: %s exists; nothing to do", done_path)
        return json.loads(done_path.read_text())
    protocol = _with_defaults(protocol, PROTOCOL_DEFAULTS)
    params = Params(params_dir)
    platform, props, description = select_platform(platform_cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    integrator = openmm.VerletIntegrator(0.001 * unit.picosecond)
    context = openmm.Context(params.system, integrator, platform, props)
    try:
        context.setPeriodicBoxVectors(*params.box)
        context.setPositions(params.positions)
        e0 = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        max_iter = int(protocol["minimise_max_iterations"])
        t0 = time.perf_counter()
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, max_iter)
        wall = time.perf_counter() - t0
        state = context.getState(getPositions=True, getEnergy=True)
        e1 = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not math.isfinite(e1) or not np.isfinite(pos).all():
            raise SimulationError(
                f"minimise: energy after minimisation is {e1} kJ/mol (NaN/inf); check {params.topology_path} for overlapping atoms"
            )
        log.info("minimise: %s, %.6g -> %.6g kJ/mol in %.1f s (%s)", params.dir, e0, e1, wall, description)
        write_text_atomic(out_dir / "state.xml", openmm.XmlSerializer.serialize(state))
        result = {
            "stage": "minimise",
            "potential_energy_before_kj_mol": _finite(e0),
            "potential_energy_after_kj_mol": e1,
            "max_iterations": max_iter,
            "tolerance_kj_mol_nm": 10.0,
            "wall_seconds": wall,
            "n_atoms": params.system.getNumParticles(),
            "platform": platform.getName(),
            "device": describe_context(context),
            "provenance": provenance(
                config={"protocol": protocol, "platform": platform_cfg},
                inputs=params.input_files(),
                extra={"platform": description, "forcefield_files": params.forcefield_files()},
            ),
        }
        write_json_atomic(done_path, result)
        return result
    finally:
        del context  # deterministic: Context before Integrator (see run_stage)


# -------------------------------------------------------------------------------------------- stages


def _add_barostat(system: openmm.System, params: Params, protocol: dict, temperature_K: float, seed: int):
    """Isotropic MC barostat, or z-only with a MOF slab. Returns (barostat, temperature parameter name)."""
    pressure = float(protocol["pressure_bar"]) * unit.bar
    interval = int(protocol["barostat_interval"])
    if params.has_mof_slab:
        # z only: MonteCarloAnisotropicBarostat with scaleX = scaleY = False. The slab is a rigid crystal
        # that is periodic in x and y, so its lattice fixes those box edges; MonteCarloMembraneBarostat
        # cannot hold x/y fixed (with zero surface tension its XY modes still rescale the area).
        barostat = openmm.MonteCarloAnisotropicBarostat(
            openmm.Vec3(1, 1, 1) * pressure, temperature_K * unit.kelvin, False, False, True, interval
        )
        # The barostat scales molecule centres. Tie all slab atoms into one "molecule" with a
        # zero-energy bond chain so that a z move translates the fixed slab rigidly instead of
        # spreading its layers (whether or not system.xml keeps the intra-slab bonds).
        tie = openmm.CustomBondForce("0")
        tie.setName("MOF slab tie (zero energy, groups the slab for the barostat)")
        slab = params.mof_atom_indices
        for a, b in zip(slab[:-1], slab[1:]):
            tie.addBond(a, b, [])
        system.addForce(tie)
        name = openmm.MonteCarloAnisotropicBarostat.Temperature()
    else:
        barostat = openmm.MonteCarloBarostat(pressure, temperature_K * unit.kelvin, interval)
        name = openmm.MonteCarloBarostat.Temperature()
    barostat.setRandomNumberSeed(seed)
    system.addForce(barostat)
    return barostat, name


def _advance(sim: app.Simulation, reporters, end_step: int) -> None:
    """integrator.step up to `end_step`, calling reporters when due (one getState per report step)."""
    while True:
        step = sim.currentStep
        if step >= end_step:
            return
        plans = [(r, r.describeNextReport(sim)) for r in reporters]
        n = end_step - step
        for _, p in plans:
            if 0 < p["steps"] < n:
                n = p["steps"]
        sim.integrator.step(n)
        due = [(r, p) for r, p in plans if p["steps"] == n]
        if due:
            include = set()
            for _, p in due:
                include.update(p.get("include", ()))
            wrap = any(p.get("periodic") for _, p in due if "positions" in p.get("include", ()))
            state = sim.context.getState(
                getPositions="positions" in include,
                getVelocities="velocities" in include,
                getForces="forces" in include,
                getEnergy="energy" in include,
                enforcePeriodicBox=wrap,
            )
            for r, _ in due:
                r.report(sim, state)


def sidecar_path(ckpt_path: Path) -> Path:
    return ckpt_path.with_suffix(".json")


def _checkpoint_record(step: int, dt_fs: float, n_atoms: int, platform_name: str) -> dict:
    return {"step": int(step), "timestep_fs": float(dt_fs), "n_atoms": int(n_atoms),
            "platform": platform_name, "openmm_version": openmm.__version__}


def verify_checkpoint(ckpt_path: Path, dt_fs: float, n_atoms: int, platform_name: str) -> dict | None:
    """The checkpoint's sidecar record if it matches this run and the file's SHA-256; else SimulationError.

    None for a checkpoint without a sidecar (written before sidecars existed): usable, but unverified.
    """
    side = sidecar_path(ckpt_path)
    pending = side.with_name(side.name + ".new")
    if pending.is_file():  # killed between the checkpoint's rename and its record's (_write_checkpoint)
        try:
            matches = json.loads(pending.read_text()).get("sha256") == sha256_file(ckpt_path)
        except ValueError:
            matches = False
        if matches:
            os.replace(pending, side)
        else:
            pending.unlink()
    if not side.is_file():
        return None
    try:
        record = json.loads(side.read_text())
        expected = {k: record[k] for k in ("step", "timestep_fs", "n_atoms", "platform", "openmm_version", "sha256")}
    except (ValueError, KeyError, TypeError) as exc:
        raise SimulationError(f"{side}: unreadable checkpoint record ({type(exc).__name__}: {exc}); delete the stage folder to restart it") from None
    actual = _checkpoint_record(expected["step"], dt_fs, n_atoms, platform_name)
    actual["sha256"] = sha256_file(ckpt_path)
    if actual["sha256"] != expected["sha256"]:
        raise SimulationError(
            f"{ckpt_path}: corrupt or truncated (SHA-256 differs from {side.name}, {ckpt_path.stat().st_size} bytes on disk); "
            "delete the stage folder to restart the stage"
        )
    what = {"timestep_fs": "protocol.timestep_fs", "n_atoms": "atom count", "platform": "platform",
            "openmm_version": "OpenMM version"}
    for key, label in what.items():
        if actual[key] != expected[key]:
            raise SimulationError(
                f"{ckpt_path}: written with {label} {expected[key]!r}, this run has {actual[key]!r}; "
                f"resume with the same {label} or delete the stage folder to restart the stage"
            )
    return expected


def _write_checkpoint(context: openmm.Context, path: Path, reporters, energy_limit, step: int, time_ps: float,
                      record: dict) -> None:
    """Checkpoint only a healthy state: finite positions and a finite, bounded energy."""
    # positions first: some platforms cannot evaluate forces on NaN coordinates at all
    pos = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    if not np.isfinite(pos).all():
        raise BlowUp(step, time_ps, "positions are NaN or infinite at checkpoint time")
    epot = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not math.isfinite(epot) or abs(epot) > energy_limit.value_in_unit(unit.kilojoule_per_mole):
        raise BlowUp(step, time_ps, f"potential energy {epot:.6g} kJ/mol at checkpoint time")
    for r in reporters:
        r.flush(sync=True)  # every frame/row up to this step is on disk before the checkpoint is
    data = context.createCheckpoint()
    # The pair cannot be renamed in one go: the new record goes to checkpoint.json.new first, then the
    # checkpoint, then the record. A kill in between leaves a .new whose hash matches the checkpoint,
    # which verify_checkpoint promotes; every other mismatch is a corrupt file.
    side = sidecar_path(path)
    pending = side.with_name(side.name + ".new")
    write_json_atomic(pending, {**record, "sha256": hashlib.sha256(data).hexdigest(), "checkpoint": path.name})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(pending, side)
    if _after_checkpoint is not None:
        _after_checkpoint(step)


def _idle_core_widening(platform: openmm.Platform, props: dict) -> IdleCoreWidening | None:
    """The growing policy of a CPU stage started with an explicit thread count below SPEMD_MD_MAX_THREADS."""
    ceiling = max_cpu_threads()
    if platform.getName() != "CPU" or ceiling is None or "Threads" not in props or int(props["Threads"]) >= ceiling:
        return None
    return IdleCoreWidening(int(props["Threads"]), ceiling)


def _with_threads(sim: app.Simulation, platform: openmm.Platform, props: dict, threads: int):
    """The same simulation on a new CPU Context with `threads` threads; the old Context is freed.

    Positions, velocities, box, step, time, barostat and integrator state move over in a checkpoint,
    exactly as a resume would load them (OpenMM's CPU random streams depend on the thread count anyway,
    so a trajectory is reproducible for a given seed and thread history, as on any resume)."""
    old = sim.integrator
    data = sim.context.createCheckpoint()
    integrator = openmm.LangevinMiddleIntegrator(old.getTemperature(), old.getFriction(), old.getStepSize())
    integrator.setRandomNumberSeed(old.getRandomNumberSeed())
    wider = app.Simulation(sim.topology, sim.system, integrator, platform, {**props, "Threads": str(int(threads))})
    wider.context.loadCheckpoint(data)
    del sim.context
    return wider, integrator


def run_stage(
    params_dir,
    stage: dict,
    protocol: dict,
    platform_cfg: dict,
    temperature_K: float,
    seed: int,
    start_state,
    out_dir,
    max_wall_seconds: float | None = None,
) -> dict:
    """Run (or resume, or skip if finished) one MD stage; return the contents of its done.json.

    start_state: a state.xml path, an openmm.State or None (params/topology.pdb), used only when the
    stage starts from scratch. Raises StageIncomplete when the wall budget runs out (rerun to continue)
    and SimulationError on a blow-up (the last good checkpoint is kept).
    """
    t_call = time.perf_counter()
    out_dir = Path(out_dir)
    done_path = out_dir / "done.json"
    if done_path.is_file():
        log.info("stage %s: %s exists; nothing to do", stage.get("name"), done_path)
        return json.loads(done_path.read_text())
    protocol = _with_defaults(protocol, PROTOCOL_DEFAULTS)
    plan = stage_plan(stage, protocol)
    name, n_steps = plan["name"], plan["n_steps"]
    stage = _with_defaults(stage, STAGE_DEFAULTS)
    budget = wall_budget_seconds(max_wall_seconds)
    params = Params(params_dir)
    system = params.system
    seed_s = stage_seed(seed, name)
    t_start = stage_temperature(stage, temperature_K, 0, n_steps)
    ramp = isinstance(stage.get("temperature_K"), (list, tuple))

    baro_param = None
    if plan["ensemble"] == "NPT":
        # a stage may set its own pressure (e.g. a high-pressure compression after packing at low density)
        stage_protocol = {**protocol, "pressure_bar": stage.get("pressure_bar", protocol["pressure_bar"])}
        _, baro_param = _add_barostat(system, params, stage_protocol, t_start, seed_s)
    dt = float(protocol["timestep_fs"]) * unit.femtosecond
    integrator = openmm.LangevinMiddleIntegrator(
        t_start * unit.kelvin, float(protocol["friction_per_ps"]) / unit.picosecond, dt
    )
    integrator.setRandomNumberSeed(seed_s)

    platform, props, description = select_platform(platform_cfg)
    topology = params.topology
    sim = app.Simulation(topology, system, integrator, platform, props)
    try:
        device = describe_context(sim.context)
        widening = _idle_core_widening(platform, props)
        thread_changes = []
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = out_dir / "checkpoint.chk"
        traj_path = out_dir / "trajectory.dcd"
        csv_path = out_dir / "state.csv"

        resumed_from = None
        # until: density_plateau -- extends the stage chunk by chunk (pipeline/equilibration.py)
        plateau = (DensityPlateau(stage, n_steps, plan["dt_fs"], plan["checkpoint_unit"], csv_path)
                   if stage.get("until") else None)
        ckpt_record = _checkpoint_record(0, plan["dt_fs"], system.getNumParticles(), platform.getName())
        verified = False
        if ckpt_path.is_file():
            record = verify_checkpoint(ckpt_path, plan["dt_fs"], system.getNumParticles(), platform.getName())
            verified = record is not None
            if not verified:
                log.warning("stage %s: %s has no %s record; resuming from it unverified", name, ckpt_path,
                            sidecar_path(ckpt_path).name)
            try:
                sim.context.loadCheckpoint(ckpt_path.read_bytes())
            except Exception as exc:
                raise SimulationError(
                    f"stage {name}: {ckpt_path} cannot be loaded on {device} ({str(exc).strip().splitlines()[0]}); "
                    "checkpoints need the same platform, precision and OpenMM version - rerun there, or delete the "
                    "stage folder to restart the stage"
                ) from None
            resumed_from = sim.currentStep
            if verified and resumed_from != record["step"]:
                raise SimulationError(
                    f"stage {name}: {ckpt_path} is at step {resumed_from} but {sidecar_path(ckpt_path).name} says "
                    f"step {record['step']}; delete the stage folder to restart the stage"
                )
            # the checkpoint carries both its step and its time: they disagree if the time step changed,
            # which also catches checkpoints without a record
            t_ckpt = sim.context.getState().getTime().value_in_unit(unit.picosecond)
            if resumed_from > 0 and not math.isclose(t_ckpt, resumed_from * plan["dt_fs"] / 1000.0, rel_tol=1e-6):
                raise SimulationError(
                    f"stage {name}: {ckpt_path} was written with protocol.timestep_fs "
                    f"{1000.0 * t_ckpt / resumed_from:.6g} (t = {t_ckpt:.6g} ps at step {resumed_from}), this run has "
                    f"{plan['dt_fs']:g}; resume with the same time step or delete the stage folder to restart the stage"
                )
            if plateau is not None and n_steps < resumed_from <= plateau.max_steps:
                # an extended until-stage: earlier checks redone from state.csv, on to this chunk's end
                if csv_path.is_file():
                    truncate_state_csv(csv_path, resumed_from)
                n_steps = plateau.resume(resumed_from)
            if resumed_from > n_steps:
                raise SimulationError(
                    f"stage {name}: {ckpt_path} is at step {resumed_from}, beyond the stage's {n_steps} steps; "
                    "time_ps was shortened - delete the stage folder to restart it"
                )
            if plan["trajectory_interval"] > 0:
                if traj_path.is_file():
                    truncate_dcd(traj_path, resumed_from)
                elif resumed_from >= plan["trajectory_interval"]:
                    raise SimulationError(f"stage {name}: {traj_path} is missing but {ckpt_path} is at step {resumed_from}")
            if csv_path.is_file():
                truncate_state_csv(csv_path, resumed_from)
            log.info("stage %s: resuming from checkpoint at step %d of %d (%s)", name, resumed_from, n_steps, device)
        else:
            positions, box = _load_start_state(start_state, params)
            sim.context.setPeriodicBoxVectors(*box)
            sim.context.setPositions(positions)
            sim.context.setVelocitiesToTemperature(t_start * unit.kelvin, seed_s)
            log.info("stage %s: starting, %d steps of %s fs, %s (%s)", name, n_steps, plan["dt_fs"], plan["ensemble"], device)

        appending = resumed_from is not None
        energy_limit = _energy_limit(system)
        reporters = []
        traj_reporter = None
        if plan["trajectory_interval"] > 0:
            traj_reporter = DCDTrajectoryReporter(
                traj_path, plan["trajectory_interval"], system.getNumParticles(), dt,
                append=appending and traj_path.is_file(),
            )
            reporters.append(traj_reporter)
        reporters.append(StateCSVReporter(
            csv_path, plan["state_interval"], n_steps, system, topology, energy_limit,
            append=appending and csv_path.is_file(),
        ))
        reporters.append(ProgressLogReporter(log, f"stage {name}", plan["state_interval"], n_steps, PROGRESS_LOG_SECONDS))
        writers = [r for r in reporters if hasattr(r, "flush")]

        unit_steps = plan["checkpoint_unit"]
        chunk = min(unit_steps, RAMP_UPDATE_MAX_STEPS) if ramp else unit_steps
        ckpt_every_s = float(protocol["checkpoint_minutes"]) * 60.0
        first_step = sim.currentStep
        t_loop = time.perf_counter()
        last_ckpt = t_loop
        seg_start = t_loop
        seg_max = 0.0
        last_ckpt_step = resumed_from

        def set_temperature(step):
            temp = stage_temperature(stage, temperature_K, step, n_steps)
            integrator.setTemperature(temp * unit.kelvin)
            if baro_param is not None:
                sim.context.setParameter(baro_param, temp)

        def extend() -> bool:
            """At the end of an until-stage's chunk: run another chunk unless the density has plateaued."""
            nonlocal n_steps
            if plateau is None:
                return False
            for w in writers:
                w.flush()
            nxt = plateau.next_end(sim.currentStep)
            if nxt is None:
                return False
            log.info("stage %s: density still drifting (%+.2f %%); extending to step %d", name,
                     plateau.checks[-1]["drift_percent"] or float("nan"), nxt)
            n_steps = nxt
            for r in reporters:  # progress and ETA against the extended length
                if hasattr(r, "total_steps"):
                    r.total_steps = nxt
            return True

        def checkpoint(step):
            nonlocal last_ckpt, last_ckpt_step, verified
            time_ps = step * plan["dt_fs"] / 1000.0
            _write_checkpoint(sim.context, ckpt_path, writers, energy_limit, step, time_ps, {**ckpt_record, "step": step})
            last_ckpt, last_ckpt_step, verified = time.perf_counter(), step, True

        def kept_message():
            if last_ckpt_step is None:
                return "no checkpoint was written"
            if verified:
                return f"last good checkpoint (step {last_ckpt_step}) kept in {ckpt_path}"
            return f"checkpoint of step {last_ckpt_step} (unverified: no {sidecar_path(ckpt_path).name}) kept in {ckpt_path}"

        # A stop signal only sets a flag: the loop checkpoints at the next frame boundary and exits 75,
        # like the wall budget. Handlers can only be installed from the main thread.
        received = []

        def on_signal(signum, _frame):
            if received:  # a second signal: stop now (the last checkpoint and the truncation on resume cover it)
                raise SystemExit(128 + signum)
            received.append(signum)
            log.warning("stage %s: %s received; stopping at the next frame boundary with a checkpoint",
                        name, signal.Signals(signum).name)

        previous_handlers = {}
        if threading.current_thread() is threading.main_thread():
            previous_handlers = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}

        try:
            try:
                while sim.currentStep < n_steps or extend():
                    step = sim.currentStep
                    target = min(n_steps, (step // chunk + 1) * chunk)
                    if ramp:  # the chunk ending at `target` runs at the schedule's value there
                        set_temperature(target)
                    _advance(sim, reporters, target)
                    step = sim.currentStep
                    if step % unit_steps != 0 or step >= n_steps:
                        continue
                    # a frame boundary: checkpoint if due, stop if the budget is nearly spent
                    now = time.perf_counter()
                    seg_max = max(seg_max, now - seg_start)
                    seg_start = now
                    if now - last_ckpt >= ckpt_every_s:
                        checkpoint(step)
                    grown = widening.propose() if widening is not None else None
                    if grown is not None:  # CPUs stayed idle: go on with more threads from this step
                        sim, integrator = _with_threads(sim, platform, props, grown)
                        device = describe_context(sim.context)
                        thread_changes.append({"step": step, "threads": grown})
                        log.info("stage %s: a CPU stayed idle for %.0f s; %d threads from step %d (%s)", name,
                                 widening.window_s, grown, step, device)
                    out_of_budget = budget is not None and (now - t_call) + 2.0 * seg_max + 5.0 > budget
                    if out_of_budget or received:
                        if last_ckpt_step != step:
                            checkpoint(step)
                        for w in writers:
                            w.close()
                        why = (f"{signal.Signals(received[0]).name} received" if received
                               else f"wall-clock budget of {budget:.0f} s nearly spent")
                        raise StageIncomplete(
                            f"stage {name}: {why} at step {step} of {n_steps} "
                            f"({step * plan['dt_fs'] / 1000.0:.3f} ps); checkpoint written, rerun to continue"
                        )
                checkpoint(sim.currentStep)
            except openmm.OpenMMException as exc:  # e.g. constraints failing on a blown-up structure
                kept = kept_message()
                step = sim.currentStep
                raise SimulationError(
                    f"stage {name}: OpenMM failed near step {step} (t = {step * plan['dt_fs'] / 1000.0:.3f} ps): "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}; {kept}"
                ) from None
            except BlowUp as exc:
                kept = kept_message()
                raise SimulationError(
                    f"stage {name}: simulation blew up at {exc}; {kept}. Check the time step, HMR and the start structure"
                ) from None
        finally:
            for w in writers:
                w.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        wall_loop = time.perf_counter() - t_loop
        equilibration = None
        if plateau is not None:  # the next stage starts from the converged window's mean volume
            v_mean = plateau.window_mean_volume_nm3()
            set_plateau_volume(sim.context, v_mean, barostat_is_z_only(system))
            equilibration = plateau.record(sim.currentStep, v_mean)

        final = sim.context.getState(getPositions=True, getVelocities=True, getEnergy=True)
        write_text_atomic(out_dir / "state.xml", openmm.XmlSerializer.serialize(final))
        steps_this_run = n_steps - first_step
        ns_per_day = (steps_this_run * plan["dt_fs"] * 1e-6) / (wall_loop / 86400.0) if wall_loop > 0 and steps_this_run > 0 else None
        box = final.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        result = {
            "stage": name,
            "ensemble": plan["ensemble"],
            "steps": n_steps,
            "timestep_fs": plan["dt_fs"],
            "simulated_time_ps": n_steps * plan["dt_fs"] / 1000.0,
            "final_time_ps": final.getTime().value_in_unit(unit.picosecond),
            "temperature_K": stage.get("temperature_K", temperature_K),
            "trajectory_interval_steps": plan["trajectory_interval"],
            "trajectory_frames": traj_reporter.n_frames if traj_reporter else 0,
            "trajectory_coordinates": "unwrapped (continuous)",
            "state_interval_steps": plan["state_interval"],
            "resumed_from_step": resumed_from,
            "steps_this_run": steps_this_run,
            "wall_seconds_this_run": wall_loop,
            "ns_per_day": ns_per_day,
            "final_potential_energy_kj_mol": final.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            "final_box_nm": box.tolist(),
            "equilibration": equilibration,
            "platform": platform.getName(),
            "device": device,
            "cpu_threads_grown": thread_changes,
            "seed": seed,
            "stage_seed": seed_s,
            "provenance": provenance(
                seed=seed,
                config={"stage": stage, "protocol": protocol, "platform": platform_cfg, "temperature_K": temperature_K},
                inputs=params.input_files(),
                extra={"platform": device, "forcefield_files": params.forcefield_files()},
            ),
        }
        write_json_atomic(done_path, result)
        log.info("stage %s: finished %d steps (%.3f ps), %s ns/day on %s", name, n_steps, result["simulated_time_ps"],
                 f"{ns_per_day:.4g}" if ns_per_day else "n/a", device)
        return result
    finally:
        # Free the Context now, not in a garbage-collected cycle (an exception's traceback holds this frame):
        # a cycle may free the Integrator before the Context, and ~Context then touches freed memory.
        del sim.context
