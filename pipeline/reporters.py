"""Reporters for :mod:`pipeline.engine`, in the style of ``openmm.app``.

Each reporter owns one output and only observes: ``describeNextReport(simulation)`` says when and what
it needs, ``report(simulation, state)`` writes it. Values stay OpenMM Quantities until the file
boundary, where units are stripped into labelled columns.

* :class:`DCDTrajectoryReporter` - all atoms, continuous (unwrapped) coordinates, numpy-fast, resumable.
* :class:`StateCSVReporter` - ``state.csv`` with labelled columns; raises :class:`BlowUp` on a NaN or
  exploding energy (like ``StateDataReporter`` raises on NaN), the engine turns that into a
  SimulationError naming the stage.
* :class:`ProgressLogReporter` - a progress line through Python logging, at most every ``min_seconds``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

from spemd.slab import MOF_RESIDUES, film_centre_density_g_cm3
from spemd.pipeline.dcd import DCDWriter
from spemd.errors import SimulationError
from spemd.files import atomic_path, names_own_file

CSV_COLUMNS = (
    "Time (ps)",
    "Step",
    "Temperature (K)",
    "Thermostat Temperature (K)",
    "Potential Energy (kJ/mole)",
    "Volume (nm^3)",
    "Density (g/mL)",
    "Speed (ns/day)",
    "ETA (s)",
    # the electrolyte alone: a slab box's film-centre density (spemd.analysis.volume), a plain box's density
    "Electrolyte Density (g/mL)",
)


class BlowUp(SimulationError):
    """The simulation produced NaN or exploding energies/positions at a given step."""

    def __init__(self, step: int, time_ps: float, what: str):
        self.step, self.time_ps, self.what = int(step), float(time_ps), what
        super().__init__(f"step {self.step} (t = {self.time_ps:.3f} ps): {what}")


def degrees_of_freedom(system: openmm.System) -> int:
    """Moving particles x 3 - constraints involving a moving particle - 3 with a CMMotionRemover."""
    moving = [system.getParticleMass(i).value_in_unit(unit.dalton) > 0 for i in range(system.getNumParticles())]
    dof = 3 * sum(moving)
    for i in range(system.getNumConstraints()):
        p1, p2, _ = system.getConstraintParameters(i)
        if moving[p1] or moving[p2]:
            dof -= 1
    if any(isinstance(system.getForce(i), openmm.CMMotionRemover) for i in range(system.getNumForces())):
        dof -= 3
    return dof


def box_mass(system: openmm.System, topology) -> unit.Quantity:
    """Total mass in the box; massless (fixed) particles count with their element's mass."""
    atoms = list(topology.atoms())
    total = 0.0
    for i in range(system.getNumParticles()):
        m = system.getParticleMass(i).value_in_unit(unit.dalton)
        if m == 0 and atoms[i].element is not None:
            m = atoms[i].element.mass.value_in_unit(unit.dalton)
        total += m
    return total * unit.dalton


def _steps_to_next(simulation, interval: int) -> int:
    return interval - simulation.currentStep % interval


class DCDTrajectoryReporter:
    """All-atom trajectory every `interval` steps (frames at steps interval, 2*interval, ...)."""

    def __init__(self, path, interval: int, n_atoms: int, dt, append: bool = False):
        self.interval = int(interval)
        dt_ps = dt.value_in_unit(unit.picosecond) if unit.is_quantity(dt) else float(dt)
        self._writer = DCDWriter(path, n_atoms, dt_ps, first_step=self.interval, interval=self.interval, append=append)

    @property
    def n_frames(self) -> int:
        return self._writer.n_frames

    def describeNextReport(self, simulation):
        return {"steps": _steps_to_next(simulation, self.interval), "periodic": False, "include": ["positions"]}

    def report(self, simulation, state):
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not np.isfinite(pos).all():
            raise BlowUp(simulation.currentStep, state.getTime().value_in_unit(unit.picosecond), "positions are NaN or infinite")
        box = np.array(state.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
        self._writer.write(pos, box)

    def flush(self, sync: bool = False):
        self._writer.flush(sync)

    def close(self):
        self._writer.close()


class _Slab:
    """The MOF slab atoms of a topology (residues of spemd.slab.MOF_RESIDUES) and the electrolyte's atoms."""

    def __init__(self, system: openmm.System, topology):
        atoms = list(topology.atoms())
        is_slab = np.array([a.residue.name in MOF_RESIDUES for a in atoms], dtype=bool)
        self.indices = np.nonzero(is_slab)[0]
        self.electrolyte = np.nonzero(~is_slab)[0]
        # element masses, as the analysis reads them from the topology (hydrogen mass repartitioning
        # moves mass by one bond length: no effect on which band an atom is in)
        self.electrolyte_masses = np.array([
            atoms[i].element.mass.value_in_unit(unit.dalton) if atoms[i].element is not None
            else system.getParticleMass(int(i)).value_in_unit(unit.dalton) for i in self.electrolyte])

    def film_centre_density(self, state) -> unit.Quantity:
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        a, b, c = state.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
        rho = film_centre_density_g_cm3(pos[self.electrolyte, 2], self.electrolyte_masses, pos[self.indices, 2],
                                        a[0] * b[1], c[2])
        return rho * unit.gram / unit.milliliter


class StateCSVReporter:
    """``state.csv``: one labelled row every `interval` steps; checks energies for blow-ups."""

    def __init__(self, path, interval: int, total_steps: int, system: openmm.System, topology,
                 energy_limit: unit.Quantity, append: bool = False):
        self.path = Path(path)
        self.interval = int(interval)
        self.total_steps = int(total_steps)
        self._dof = degrees_of_freedom(system)
        self._mass = box_mass(system, topology)
        self._slab = _Slab(system, topology)
        self._energy_limit = energy_limit
        self._fh = open(path, "a" if append else "w", newline="")
        self._csv = csv.writer(self._fh)
        if not append or Path(path).stat().st_size == 0:
            self._csv.writerow(CSV_COLUMNS)
        self._clock0 = None
        self._step0 = None
        self.last_row = None

    def describeNextReport(self, simulation):
        if self._clock0 is None:  # stepping starts now: speeds are measured from here
            self._clock0, self._step0 = time.perf_counter(), simulation.currentStep
        include = ["energy", "positions"] if self._slab.indices.size else ["energy"]
        return {"steps": _steps_to_next(simulation, self.interval), "periodic": None, "include": include}

    @names_own_file
    def report(self, simulation, state):
        step = simulation.currentStep
        t = state.getTime()
        epot = state.getPotentialEnergy()
        e_kj = epot.value_in_unit(unit.kilojoule_per_mole)
        limit_kj = self._energy_limit.value_in_unit(unit.kilojoule_per_mole)
        if not math.isfinite(e_kj) or abs(e_kj) > limit_kj:
            raise BlowUp(step, t.value_in_unit(unit.picosecond),
                         f"potential energy {e_kj:.6g} kJ/mol (NaN or beyond the limit {limit_kj:.3g} kJ/mol)")
        temperature = (2 * state.getKineticEnergy() / (self._dof * unit.MOLAR_GAS_CONSTANT_R)) if self._dof > 0 else 0 * unit.kelvin
        volume = state.getPeriodicBoxVolume()
        density = self._mass / volume / unit.AVOGADRO_CONSTANT_NA
        e_density = self._slab.film_centre_density(state) if self._slab.indices.size else density
        elapsed = time.perf_counter() - self._clock0
        done_steps = step - self._step0
        dt = simulation.integrator.getStepSize()
        if elapsed > 0 and done_steps > 0:
            ns_per_day = (done_steps * dt).value_in_unit(unit.nanosecond) / (elapsed / 86400.0)
            eta = (self.total_steps - step) * elapsed / done_steps
        else:
            ns_per_day, eta = float("nan"), float("nan")
        row = (
            f"{t.value_in_unit(unit.picosecond):.6f}",
            step,
            f"{temperature.value_in_unit(unit.kelvin):.4f}",
            f"{simulation.integrator.getTemperature().value_in_unit(unit.kelvin):.4f}",
            f"{epot.value_in_unit(unit.kilojoule_per_mole):.6f}",
            f"{volume.value_in_unit(unit.nanometer**3):.6f}",
            f"{density.value_in_unit(unit.gram / unit.milliliter):.6f}",
            f"{ns_per_day:.4g}",
            f"{eta:.1f}",
            f"{e_density.value_in_unit(unit.gram / unit.milliliter):.6f}",
        )
        self._csv.writerow(row)
        self.last_row = dict(zip(CSV_COLUMNS, row))

    @names_own_file
    def flush(self, sync: bool = False):
        self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())

    def close(self):
        if not self._fh.closed:
            self._fh.close()


class ProgressLogReporter:
    """A progress line via `logger` every `interval` steps, at most once per `min_seconds` of wall time."""

    def __init__(self, logger: logging.Logger, label: str, interval: int, total_steps: int, min_seconds: float = 60.0):
        self.logger, self.label = logger, label
        self.interval, self.total_steps, self.min_seconds = int(interval), int(total_steps), float(min_seconds)
        self._clock0 = self._last = None
        self._step0 = None

    def describeNextReport(self, simulation):
        if self._clock0 is None:
            self._clock0 = self._last = time.perf_counter()
            self._step0 = simulation.currentStep
        return {"steps": _steps_to_next(simulation, self.interval), "periodic": None, "include": []}

    def report(self, simulation, state):
        now = time.perf_counter()
        step = simulation.currentStep
        if now - self._last < self.min_seconds and step < self.total_steps:
            return
        self._last = now
        dt = simulation.integrator.getStepSize()
        done = step - self._step0
        elapsed = now - self._clock0
        speed = (done * dt).value_in_unit(unit.nanosecond) / (elapsed / 86400.0) if elapsed > 0 and done > 0 else float("nan")
        eta = (self.total_steps - step) * elapsed / done if done > 0 else float("nan")
        self.logger.info(
            "%s: step %d/%d (%.1f%%), %.1f of %.1f ps, %.3g ns/day, ETA %.0f s",
            self.label, step, self.total_steps, 100.0 * step / self.total_steps,
            state.getTime().value_in_unit(unit.picosecond), (self.total_steps * dt).value_in_unit(unit.picosecond),
            speed, eta,
        )


def truncate_state_csv(path, last_step: int) -> int:
    """Keep the header and the rows with Step <= `last_step` (a half-written last line is dropped)."""
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return 0
    header = next(csv.reader([lines[0]]))
    if tuple(header) != CSV_COLUMNS:
        raise SimulationError(f"{path}: unexpected columns {header}; expected {list(CSV_COLUMNS)}")
    kept = [lines[0]]
    for line in lines[1:]:
        if not line.endswith("\n"):
            break
        fields = next(csv.reader([line]))
        try:
            step = int(fields[1])
        except (IndexError, ValueError):
            break
        if len(fields) != len(CSV_COLUMNS) or step > last_step:
            break
        kept.append(line)
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(kept))
    return len(kept) - 1
