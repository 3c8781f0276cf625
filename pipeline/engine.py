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

Each stage is bound to its inputs (:mod:`pipeline.stagefolder`): checkpoint record and ``done.json``
carry the SHA-256 of ``system.xml``, of the start state and of the stage's config (:func:`pipeline.protocol.stage_config`).
A folder recorded with other inputs, or a finished one whose ``done.json`` was removed (Snakemake's
``--forcerun``/``--forceall`` and rerun triggers delete it), is set aside as ``<stage>.replaced`` and
the stage runs afresh; only an unfinished run with the same inputs is resumed. A running stage holds
an exclusive lock on its folder, so a second process on it stops at once.

Velocities and the thermostat/barostat random streams are seeded at the start of the first run of a
stage from ``seed`` and the stage name (:func:`pipeline.protocol.stage_seed`), so stages of one replica get independent
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
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from spemd.pipeline.dcd import truncate_dcd
from spemd.errors import SimulationError, StageIncomplete
from spemd.files import atomic_path, write_json_atomic, write_text_atomic
from spemd.pipeline.stagefolder import StageFolder, changed_inputs, input_hashes
from spemd.pipeline.checkpoints import checkpoint_record, checkpoint_record_on_disk, sidecar_path, verify_checkpoint
from spemd.pipeline.protocol import (
    PROTOCOL_DEFAULTS,
    SLURM_END_MARGIN_S,
    STAGE_DEFAULTS,
    Params,
    _with_defaults,
    load_start_state,
    stage_config,
    stage_plan,
    stage_seed,
    stage_temperature,
    start_state_sha256,
    wall_budget_seconds,
)
from spemd.pipeline.crashwatch import CrashWatch
from spemd.pipeline.platforms import IdleCoreWidening, choose_platform, describe_context, max_cpu_threads
from spemd.pipeline.equilibration import DensityPlateau
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
#: at most this many steps between temperature updates of an annealing ramp
RAMP_UPDATE_MAX_STEPS = 250
#: wall seconds between progress lines in the log
PROGRESS_LOG_SECONDS = 60.0

#: signals that make a running stage checkpoint at the next frame boundary and exit 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

# Test hook: called as _after_checkpoint(step) after every checkpoint write (tests kill the process here).
_after_checkpoint = None


__all__ = ["SLURM_END_MARGIN_S", "Params", "StageIncomplete", "minimise", "run_stage", "stage_plan", "stage_seed",
           "stage_temperature", "verify_checkpoint", "wall_budget_seconds"]


def _energy_limit(system) -> unit.Quantity:
    return ENERGY_LIMIT_PER_ATOM_KJ_MOL * max(system.getNumParticles(), 1) * unit.kilojoule_per_mole


def _finite(x) -> float | None:
    return x if x is not None and math.isfinite(x) else None


# --------------------------------------------------------------------------------------- minimisation


def minimise(params_dir, protocol: dict, platform_cfg: dict, out_dir) -> dict:
    """Local energy minimisation of params/topology.pdb; writes out_dir/state.xml and done.json.

    Massless (fixed) atoms stay where they are. A finished folder is not redone unless its done.json
    records other inputs (pipeline/stagefolder.py); then it is set aside and minimisation runs afresh.
    """
    protocol = _with_defaults(protocol, PROTOCOL_DEFAULTS)
    with StageFolder(out_dir) as folder:
        params = Params(params_dir)
        # the minimiser reads only this key of the protocol
        inputs = input_hashes(params.system_path, sha256_file(params.topology_path),
                              {"minimise_max_iterations": int(protocol["minimise_max_iterations"])})
        done = folder.finished_record(inputs, "minimise")
        if done is not None:
            return done
        result = _minimise(params, protocol, platform_cfg, folder.dir, inputs)
        folder.finish()
        return result


def _minimise(params: Params, protocol: dict, platform_cfg: dict, out_dir: Path, inputs: dict) -> dict:
    done_path = out_dir / "done.json"
    choice = choose_platform(platform_cfg, params.system_path, params.positions, params.box, ("energy", "minimise"))
    platform, props, description = choice.platform, choice.props, choice.description
    integrator = openmm.VerletIntegrator(0.001 * unit.picosecond)
    context = openmm.Context(params.system, integrator, platform, props)
    watch = CrashWatch("minimise", description)
    try:
        context.setPeriodicBoxVectors(*params.box)
        context.setPositions(params.positions)
        e0 = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        max_iter = int(protocol["minimise_max_iterations"])
        t0 = time.perf_counter()
        watch.at("in the minimiser")
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
            "platform_choice": choice.record(),
            "inputs": inputs,
            "provenance": provenance(
                config={"protocol": protocol, "platform": platform_cfg},
                inputs=params.input_files(),
                extra={"platform": description, "forcefield_files": params.forcefield_files()},
            ),
        }
        write_json_atomic(done_path, result)
        return result
    finally:
        watch.close()
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
    protocol = _with_defaults(protocol, PROTOCOL_DEFAULTS)
    plan = stage_plan(stage, protocol)
    name = plan["name"]
    stage = _with_defaults(stage, STAGE_DEFAULTS)
    budget = wall_budget_seconds(max_wall_seconds)
    with StageFolder(out_dir) as folder:
        params = Params(params_dir)
        inputs = input_hashes(params.system_path, start_state_sha256(start_state, params),
                              stage_config(stage, protocol, temperature_K, seed))
        done = folder.finished_record(inputs, f"stage {name}")
        if done is not None:
            return done
        ckpt_path = folder.dir / "checkpoint.chk"
        record = checkpoint_record_on_disk(ckpt_path)
        if ckpt_path.is_file() and record is not None:
            changed = changed_inputs(record["inputs"], inputs) if "inputs" in record else []
            if changed:
                folder.set_aside(f"stage {name}: {', '.join(changed)} changed since {ckpt_path} was written")
            elif record.get("stage_complete"):
                folder.set_aside(f"stage {name}: finished before and its done.json was removed (a forced rerun)")
        result = _run_stage(params, stage, plan, protocol, platform_cfg, temperature_K, seed, start_state,
                            folder.dir, budget, t_call, inputs)
        folder.finish()
        return result


def _run_stage(params: Params, stage: dict, plan: dict, protocol: dict, platform_cfg: dict, temperature_K: float,
               seed: int, start_state, out_dir: Path, budget, t_call: float, inputs: dict) -> dict:
    name, n_steps = plan["name"], plan["n_steps"]
    done_path = out_dir / "done.json"
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

    choice = choose_platform(platform_cfg, params.system_path, params.positions, params.box, ("energy", "md"))
    platform, props, description = choice.platform, choice.props, choice.description
    topology = params.topology
    sim = app.Simulation(topology, system, integrator, platform, props)
    watch = CrashWatch(f"stage {name}", description, out_dir / "checkpoint.chk")
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
        ckpt_record = {**checkpoint_record(0, plan["dt_fs"], system.getNumParticles(), platform.getName()),
                       "inputs": inputs}
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
            positions, box = load_start_state(start_state, params)
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
            watch.checkpointed(step)
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
                    watch.at(f"at steps {step}-{target} of {n_steps}")
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
        # before done.json: a checkpoint of a finished stage is never resumed once done.json is removed
        # (Snakemake's --forcerun and rerun triggers delete it), so a forced rerun re-simulates
        side = sidecar_path(ckpt_path)
        write_json_atomic(side, {**json.loads(side.read_text()), "stage_complete": True})
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
            "platform_choice": choice.record(),
            "cpu_threads_grown": thread_changes,
            "seed": seed,
            "stage_seed": seed_s,
            "inputs": inputs,
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
        watch.close()
        del sim.context
