# Config loading, validation and input functions shared by all rule files.
import functools
import json
import os
import sys
import time

from spemd.config import read_yaml, validate_config
from spemd.files import check_writable
from spemd.cpu_load import idle_cpus
from spemd.pipeline import job_sizes
from spemd.pipeline.gpus import count_gpus
from spemd.systems.plan import planned_counts
from spemd.pipeline.platforms import check_requested_platform
from spemd.errors import ConfigError
from snakemake.exceptions import WorkflowError


try:
    # Snakemake keeps the last of a key given twice; spemd's reader refuses it, naming the key and both lines
    for _configfile in workflow.configfiles:
        read_yaml(_configfile)
    # JSON Schema validation (spemd/schema/config.schema.yaml) before any job is scheduled; fills defaults.
    CONFIG = validate_config(config)
except ConfigError as exc:
    sys.stderr.write(f"config error: {exc}\n")
    sys.exit(1)


onstart:
    # Before the first job (the executor is known only now, not while this file is parsed): a platform
    # named in the config must exist here when the jobs run here. On a cluster they run on other
    # machines, which this one cannot see, so there each job checks it itself.
    if workflow.local_exec:
        try:
            check_requested_platform(CONFIG["platform"])
        except ConfigError as exc:
            sys.stderr.write(f"config error: {exc}\n")
            sys.exit(1)
    elif CONFIG["platform"]["name"] != "auto":
        sys.stderr.write(f"platform.name {CONFIG['platform']['name']!r}: not checked here; the jobs run on the cluster's nodes\n")

# On a workstation, at most one GPU job per visible GPU unless the profile or --resources says otherwise.
if workflow.local_exec and "gpu" not in workflow.global_resources and count_gpus() > 0:
    workflow.register_resource("gpu", count_gpus())

# Each config writes under its own root (results_dir), so two studies in one folder never share a file.
RESULTS = os.path.normpath(CONFIG["results_dir"])
LOGS = "logs" if RESULTS == "results" else f"{RESULTS}/logs"

# A folder that cannot be written (read-only mount, other owner) is one line now, not Snakemake's traceback
# when it creates .snakemake/ or a job's first file. Tried for real: permission bits say nothing for root.
try:
    for _folder in (os.getcwd(), RESULTS):
        check_writable(_folder)
except OSError as exc:
    sys.stderr.write(f"error: {exc.filename}: {exc.strerror}; the workflow needs to write there (run it in a "
                     "writable folder, or set results_dir)\n")
    sys.exit(1)

SYSTEMS = list(CONFIG["systems"])
REPLICAS = list(range(CONFIG["replicas"]))
TEMPERATURES = [f"{t:g}" for t in CONFIG["temperatures_K"]]
STAGES = [s["name"] for s in CONFIG["protocol"]["stages"]]
PRODUCTION = STAGES[-1]



def sections(*names, **extra):
    """JSON of the config sections one step needs, passed as params so unrelated edits do not rerun it."""
    data = {name: CONFIG[name] for name in names}
    data.update(extra)
    return json.dumps(data, sort_keys=True)


def previous_state(wildcards):
    """state.xml that a stage starts from: the stage before it, or the minimised structure."""
    index = STAGES.index(wildcards.stage)
    previous = "minimise" if index == 0 else STAGES[index - 1]
    return f"{RESULTS}/{wildcards.system}/rep{wildcards.replica}/{wildcards.T}K/md/{previous}/done.json"


_UNFINISHED = {"at": None, "count": 0}
#: seconds a count of unfinished simulations is reused: without it, a dry run of N jobs checked every run
#: for each job (quadratic: 71 s instead of 25 s for 10,801 jobs); within a second no simulation's share moves
UNFINISHED_TTL_S = 1.0


def unfinished_simulations():
    """Runs (system, replica, temperature) without their production done.json, counted at most once a second."""
    now = time.monotonic()
    if _UNFINISHED["at"] is None or now - _UNFINISHED["at"] > UNFINISHED_TTL_S:
        _UNFINISHED["count"] = sum(
            not os.path.exists(f"{RESULTS}/{s}/rep{r}/{t}K/md/{PRODUCTION}/done.json")
            for s in SYSTEMS
            for r in REPLICAS
            for t in TEMPERATURES
        )
        _UNFINISHED["at"] = time.monotonic()
    return _UNFINISHED["count"]


def md_threads(wildcards):
    """Threads of an MD job (minimise, md_stage): its share of the cores among the unfinished simulations.

    Snakemake evaluates a callable `threads` when it schedules the job (once its inputs exist), so
    while the default run's two simulations (PEO, CPE) both run each job gets cores // 2, and once one
    has its production done.json the next stages of the other get all the cores. A share above one
    thread is capped at 1 + the CPUs idle at that moment (idle_cpus): on a machine that other users keep
    busy a second OpenMM thread is slower than one (benchmarks/results/md_threads_*.txt), so the last
    simulation takes only cores that are really free. SPEMD_MD_THREADS_IDLE_CAP=0 turns the cap off.
    Under --forcerun every production done.json exists, so every MD job gets all the cores and they
    run one after the other. Profiles override all this with set-threads (GPU jobs: 1 thread).
    """
    try:
        cores = workflow.cores
    except WorkflowError:  # no --cores (a cluster executor without set-threads): one thread
        return 1
    if not isinstance(cores, int) or cores < 1 or cores > 4096:
        return 1
    share = max(1, cores // max(1, unfinished_simulations()))
    if share > 1 and os.environ.get("SPEMD_MD_THREADS_IDLE_CAP", "1") != "0":
        idle = idle_cpus()
        if idle is not None:
            share = max(1, min(share, 1 + int(idle + 0.5)))
    return share


def md_max_threads(wildcards):
    """Threads an MD stage may grow to while it runs (SPEMD_MD_MAX_THREADS, pipeline/engine.py): all of
    --cores on local execution, so that the last simulation takes the cores the others leave idle; on a
    cluster its own allotment (a job must stay inside the CPUs it was given)."""
    try:
        cores = workflow.cores
    except WorkflowError:
        return 1
    if not workflow.local_exec or not isinstance(cores, int) or cores < 1 or cores > 4096:
        return 1
    return cores


def all_analysis_outputs():
    return expand(
        f"{RESULTS}/{{system}}/rep{{replica}}/{{T}}K/analysis/transport.json", system=SYSTEMS, replica=REPLICAS, T=TEMPERATURES
    )


def summary_table():
    return f"{RESULTS}/summary.csv"


def calibration_input(wildcards):
    """The metal-O(TFSI) site terms when calibration is enabled and the system has a MOF slab: the shipped
    forcefields/calibration.json, or the calibrate job's refit (calibration.refit)."""
    spec = CONFIG["systems"][wildcards.system]
    if not CONFIG["calibration"]["enabled"] or spec.get("mof_wt_percent", 0) <= 0:
        return {}
    if CONFIG["calibration"]["refit"]:
        return {"calibration": f"{RESULTS}/calibration/calibration.json"}
    from spemd.resources import forcefield_dir

    return {"calibration": str(forcefield_dir() / "calibration.json")}


# ---- Job sizes from the box: mem_mb and runtime of build, parametrise, minimise, md_stage and analyse
# come from the box's atom count and the stage length (formulas in pipeline/job_sizes.py; measurements
# in docs/running.md, "Job resources"). Profiles keep only site settings.
@functools.lru_cache(maxsize=None)
def box_counts(system):
    """Atoms and NaTFSI pairs of a system's box, exact from its config before the box exists (systems/plan.py)."""
    return planned_counts(system, CONFIG["systems"][system])


def box_atoms(system):
    return box_counts(system)["atoms"]


def stage_length_ps(name):
    """Simulated time of one MD stage (ps): time_ps, or max_time_ps for an `until` stage."""
    stage = next(s for s in CONFIG["protocol"]["stages"] if s["name"] == name)
    if stage.get("until") and stage.get("max_time_ps"):
        return float(stage["max_time_ps"])
    return float(stage["time_ps"])


def production_frames():
    """Frames of the production trajectory (what analyse holds)."""
    stage = CONFIG["protocol"]["stages"][-1]
    interval = float(stage.get("trajectory_interval_ps") or 0)
    return int(round(stage["time_ps"] / interval)) if interval > 0 else 0


def job_mem_mb(job):
    """Input function: mem_mb of `job` from its box's atoms (and, for analyse, the production's frames)."""
    return lambda wildcards: job_sizes.mem_mb(job, box_atoms(wildcards.system), production_frames(),
                                              2 * box_counts(wildcards.system)["salt_pairs"])


def job_runtime(job):
    """Input function: runtime (minutes) of `job` from its box's atoms and stage length, per attempt."""

    def runtime(wildcards, attempt):
        stage_ps = 0.0
        if job == "md_stage":
            stage_ps = stage_length_ps(wildcards.stage)
        elif job == "minimise":
            protocol = CONFIG["protocol"]
            stage_ps = job_sizes.minimise_equivalent_ps(protocol["minimise_max_iterations"], protocol["timestep_fs"])
        return job_sizes.runtime_min(job, box_atoms(wildcards.system), stage_ps, production_frames(), attempt)

    return runtime
