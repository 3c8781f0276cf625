"""Memory and wall-time requests of the workflow's jobs, sized from the box and the stage length.

rules/common.smk passes each job's atom count (systems.plan, exact before the box exists), the length
of its MD stage and the production's frame count; these functions turn them into Snakemake's
``mem_mb`` and ``runtime`` (minutes). Formulas (constants measured by benchmarks/job_memory.py,
docs/running.md "Job resources"):

    mem_mb  = ceil_100( SAFETY x 1.048576 x (BASE_MIB[job] + PER_ATOM_KIB[job] x atoms / 1024
                                  + [analyse] ANALYSE_BYTES_PER_ION_FRAME x ions x frames / 2^20) )
    runtime = min(MAX_RUNTIME_MIN, 2^(attempt-1) x (10 + work)),   work in minutes:
        build, parametrise:    atoms / SETUP_ATOMS_PER_MIN[job]
        md stage, minimise:    1.25 x 1440 x atoms x stage_ns / MD_ATOM_NS_PER_DAY
        analyse:               atoms x frames / ANALYSE_ATOM_FRAMES_PER_MIN

An MD stage's length is its ``time_ps``, or ``max_time_ps`` for an ``until: density_plateau`` stage;
minimise counts as MINIMISE_STEPS_PER_ITERATION MD steps per minimiser iteration
(:func:`minimise_equivalent_ps`).
An MD stage that reaches its runtime checkpoints and resumes in the next attempt (pipeline/engine.py),
so a short estimate costs a requeue, not the work; the doubling per attempt gives the non-resumable
jobs more time on retry. MD_ATOM_NS_PER_DAY is the assumed GPU throughput of config/paper.yaml's
cost estimate (1.54e7 atom ns/day: ~700 ns/day for 22,000 atoms on one H100/H200, not yet measured);
``SPEMD_ATOM_NS_PER_DAY`` overrides it for a site's cards.
"""

from __future__ import annotations

import math
import os

from spemd.errors import ConfigError, one_of

JOBS = ("build", "parametrise", "minimise", "md_stage", "analyse")

#: Peak RSS model, measured on the default boxes and config/paper.yaml's CPE-10 build (docs/running.md).
BASE_MIB = {"build": 230.0, "parametrise": 215.0, "minimise": 215.0, "md_stage": 215.0, "analyse": 265.0}
PER_ATOM_KIB = {"build": 5.0, "parametrise": 9.3, "minimise": 12.3, "md_stage": 12.3, "analyse": 3.8}
#: Analysis holds every frame of the ions (Na+ and TFSI- centres): 3 float64 coordinates in the MSD's
#: (frames, ions, 3) array, and up to 7 more of that size in unwrapping and the zero-padded complex FFT
#: of the MSD (analysis/msd.py): 8 x 24 bytes. Derived from the array sizes, not measured: on the
#: default PEO box (12 ions) 20 and 200 frames peaked within 0.2 MiB of each other.
ANALYSE_BYTES_PER_ION_FRAME = 192
MB_PER_MIB = 1.048576  # Snakemake's mem_mb is in 10^6 bytes, RSS in MiB
#: Headroom over the model: the measurements are one machine's, and Slurm kills a job at its limit.
SAFETY = 1.5

#: Atoms per minute of the set-up jobs (config/paper.yaml's CPE-10, 53,058 atoms, on a loaded 2-vCPU
#: Xeon: build 6,760/min, parametrise 43,900/min; divided by ~4.5 for slower or busier nodes).
SETUP_ATOMS_PER_MIN = {"build": 1_500.0, "parametrise": 10_000.0}
#: Atom x frames per minute of analyse-run beyond its start-up (measured 35,000/min on the default CPE box,
#: 237,000/min on PEO, ~790,000/min on the paper's CPE-10 over 5 frames, all on a busy machine).
ANALYSE_ATOM_FRAMES_PER_MIN = 200_000.0
#: A minimiser iteration costs about as much as this many MD steps (default CPE box on CPU: 0.66 s per
#: iteration, 0.15 s per MD step).
MINIMISE_STEPS_PER_ITERATION = 4
#: What minimise_max_iterations 0 (until converged) is sized as.
UNCAPPED_MINIMISE_ITERATIONS = 10_000
#: Assumed MD throughput (atom ns per day); SPEMD_ATOM_NS_PER_DAY overrides it.
MD_ATOM_NS_PER_DAY = 1.54e7
MAX_RUNTIME_MIN = 1440


def _check(job: str) -> None:
    if job not in JOBS:
        raise ConfigError(one_of("job", job, JOBS))


def mem_mb(job: str, atoms: int, frames: int = 0, ions: int = 0) -> int:
    """Memory request (MB) of one `job` on a box of `atoms` atoms (for analyse also the production's
    `frames` and the box's `ions`, Na+ plus TFSI-)."""
    _check(job)
    mib = BASE_MIB[job] + PER_ATOM_KIB[job] * atoms / 1024.0
    if job == "analyse":
        mib += ANALYSE_BYTES_PER_ION_FRAME * ions * frames / 2.0**20
    return int(math.ceil(SAFETY * mib * MB_PER_MIB / 100.0) * 100)


def md_atom_ns_per_day() -> float:
    """The MD throughput the runtime estimate assumes: SPEMD_ATOM_NS_PER_DAY, else MD_ATOM_NS_PER_DAY."""
    value = os.environ.get("SPEMD_ATOM_NS_PER_DAY")
    try:
        rate = float(value) if value else MD_ATOM_NS_PER_DAY
    except ValueError:
        raise ConfigError(f"SPEMD_ATOM_NS_PER_DAY: {value!r} is not a number (atom ns per day, e.g. 1.5e7)") from None
    if not rate > 0:
        raise ConfigError(f"SPEMD_ATOM_NS_PER_DAY: {value!r} is out of range; must be > 0")
    return rate


def minimise_equivalent_ps(max_iterations: int, timestep_fs: float) -> float:
    """The MD time (ps) that costs as much as `max_iterations` minimiser iterations (0, "until converged",
    counts as UNCAPPED_MINIMISE_ITERATIONS)."""
    iterations = max_iterations or UNCAPPED_MINIMISE_ITERATIONS
    return MINIMISE_STEPS_PER_ITERATION * iterations * timestep_fs / 1000.0


def runtime_min(job: str, atoms: int, stage_ps: float = 0.0, frames: int = 0, attempt: int = 1) -> int:
    """Wall-time request (minutes) of attempt `attempt` of one `job` (module docstring)."""
    _check(job)
    if job in ("md_stage", "minimise"):
        work = 1.25 * 1440.0 * atoms * (stage_ps / 1000.0) / md_atom_ns_per_day()
    elif job == "analyse":
        work = atoms * frames / ANALYSE_ATOM_FRAMES_PER_MIN
    else:
        work = atoms / SETUP_ATOMS_PER_MIN[job]
    return int(min(MAX_RUNTIME_MIN, math.ceil(2 ** (max(1, attempt) - 1) * (10.0 + work))))
