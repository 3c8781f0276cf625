"""NPT stages that run until the electrolyte density has stopped drifting (``until: density_plateau``).

A stage with ``until: density_plateau`` runs ``time_ps`` first, then after every further chunk of
``time_ps`` it applies the study's own plateau test (:func:`spemd.analysis.study_common.npt_density`: the
second half of the stage's state.csv so far, electrolyte density column, linear drift of 5 block means;
converged when the study's verdict is "yes", i.e. |drift| < 0.5 % of the mean by more than 2 sigma of
the drift). It stops when converged or when the next chunk would pass ``max_time_ps``, records every
check, and leaves the box at the mean volume of the window the test averaged, so that the next stage
(production) starts from the converged density, not from the last barostat fluctuation.

Setting the mean volume scales the molecules' centres (as the barostat itself moves them: z only with a
MOF slab, all axes otherwise), so molecules stay whole and bond lengths unchanged.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

from spemd.analysis.study_common import DRIFT_TOLERANCE, npt_density
from spemd.errors import ConfigError

UNTIL_CHOICES = ("density_plateau",)
VOLUME_COLUMN = "Volume (nm^3)"


def check_stage(stage: dict, key: str) -> None:
    """ConfigError unless an ``until`` stage is NPT with max_time_ps >= time_ps."""
    until = stage.get("until")
    if until is None:
        if "max_time_ps" in stage:
            raise ConfigError(f"{key}.max_time_ps: only with until: density_plateau")
        return
    if until not in UNTIL_CHOICES:
        raise ConfigError(f"{key}.until: {until!r} is not allowed; allowed values: {', '.join(UNTIL_CHOICES)}")
    if stage.get("ensemble") != "NPT":
        raise ConfigError(f"{key}.until: density_plateau needs ensemble NPT (got {stage.get('ensemble')!r})")
    mx = stage.get("max_time_ps")
    if mx is None or not mx >= stage.get("time_ps", 0):
        raise ConfigError(f"{key}.max_time_ps: {mx!r}; required with until and must be >= time_ps ({stage.get('time_ps')!r})")


class DensityPlateau:
    """Decides after each chunk whether an ``until: density_plateau`` stage goes on (module docstring)."""

    def __init__(self, stage: dict, chunk_steps: int, dt_fs: float, unit_steps: int, state_csv):
        self.chunk = int(chunk_steps)
        self.dt_fs = float(dt_fs)
        self.state_csv = Path(state_csv)
        # whole checkpoint units, so that extending keeps checkpoints on frame/barostat boundaries
        max_steps = int(round(float(stage["max_time_ps"]) * 1000.0 / self.dt_fs))
        self.max_steps = max(self.chunk, max_steps - max_steps % int(unit_steps))
        self.checks: list[dict] = []
        self.converged = False

    def _check(self, step: int) -> dict:
        d = npt_density(self.state_csv, max_step=step)
        drift = d["drift"]
        return {"time_ps": step * self.dt_fs / 1000.0, "density_g_cm3": d["mean"],
                "drift_percent": drift.get("drift_percent"), "verdict": drift.get("verdict"), "column": d["column"]}

    def next_end(self, step: int) -> int | None:
        """The step to run to next, or None when the stage is done (converged or at max_time_ps)."""
        self.checks.append(self._check(step))
        self.converged = self.checks[-1]["verdict"] == "yes"
        if self.converged or step + self.chunk > self.max_steps:
            return None
        return step + self.chunk

    def resume(self, step: int) -> int:
        """Resuming at `step` (state.csv truncated to it): redo the checks of the chunk ends before it, from
        state.csv's rows up to each, and return the chunk end to run to -- as the run would have gone on."""
        self.checks = [self._check(end) for end in range(self.chunk, step, self.chunk)]
        return min(-(-step // self.chunk) * self.chunk, self.max_steps) if step > 0 else self.chunk

    def window_mean_volume_nm3(self) -> float:
        """Mean box volume over the second half of state.csv: the window the plateau test averaged."""
        with open(self.state_csv, newline="") as fh:
            rows = list(csv.DictReader(fh))
        v = np.array([float(r[VOLUME_COLUMN]) for r in rows])
        return float(v[len(v) // 2:].mean())

    def record(self, step: int, mean_volume_nm3: float | None) -> dict:
        last = self.checks[-1] if self.checks else {}
        return {"until": "density_plateau", "converged": self.converged, "time_to_plateau_ps":
                step * self.dt_fs / 1000.0 if self.converged else None, "stopped_at_ps": step * self.dt_fs / 1000.0,
                "max_steps": self.max_steps, "chunk_steps": self.chunk, "tolerance_percent": 100.0 * DRIFT_TOLERANCE,
                "checks": self.checks, "final_drift_percent": last.get("drift_percent"),
                "start_volume_for_next_stage_nm3": mean_volume_nm3,
                "test": "spemd.analysis.study_common.npt_density drift verdict 'yes' (second half of the stage)"}


def set_volume(context: openmm.Context, volume_nm3: float, z_only: bool) -> None:
    """Scale the box and the molecules' centres (OpenMM's molecules, as its barostats do) to `volume_nm3`."""
    state = context.getState(getPositions=True)
    pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    box = np.array(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
    f = volume_nm3 / abs(np.linalg.det(box))
    scale = np.array([1.0, 1.0, f]) if z_only else np.full(3, f ** (1.0 / 3.0))
    system = context.getSystem()
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    for mol in context.getMolecules():
        idx = np.asarray(mol)
        w = masses[idx] if masses[idx].sum() > 0 else np.ones(len(idx))  # the fixed slab: geometric centre
        centre = w @ pos[idx] / w.sum()
        pos[idx] += centre * (scale - 1.0)
    context.setPeriodicBoxVectors(*(openmm.Vec3(*(v * scale)) for v in box))
    context.setPositions(pos)


def is_z_only(system: openmm.System) -> bool:
    """Whether the system's barostat scales z only (the slab's MonteCarloAnisotropicBarostat)."""
    for force in system.getForces():
        if isinstance(force, openmm.MonteCarloAnisotropicBarostat):
            return not force.getScaleX() and not force.getScaleY()
    return False


__all__ = ["UNTIL_CHOICES", "DensityPlateau", "check_stage", "is_z_only", "set_volume"]
