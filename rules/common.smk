# Config loading, validation and input functions shared by all rule files.
import json
import os
import sys

from spemd.config import validate_config
from spemd.cpu_load import idle_cpus
from spemd.pipeline.gpus import count_gpus
from spemd.errors import ConfigError
from snakemake.exceptions import WorkflowError


try:
    # JSON Schema validation (spemd/schema/config.schema.yaml) before any job is scheduled; fills defaults.
    CONFIG = validate_config(config)
except ConfigError as exc:
    sys.stderr.write(f"config error: {exc}\n")
    sys.exit(1)

# On a workstation, at most one GPU job per visible GPU unless the profile or --resources says otherwise.
if workflow.local_exec and "gpu" not in workflow.global_resources and count_gpus() > 0:
    workflow.register_resource("gpu", count_gpus())

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
    return f"results/{wildcards.system}/rep{wildcards.replica}/{wildcards.T}K/md/{previous}/done.json"


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
    unfinished = sum(
        not os.path.exists(f"results/{s}/rep{r}/{t}K/md/{PRODUCTION}/done.json")
        for s in SYSTEMS
        for r in REPLICAS
        for t in TEMPERATURES
    )
    share = max(1, cores // max(1, unfinished))
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
        "results/{system}/rep{replica}/{T}K/analysis/transport.json", system=SYSTEMS, replica=REPLICAS, T=TEMPERATURES
    )


def summary_table():
    return "results/summary.csv"


def calibration_input(wildcards):
    """The system's metal's calibration.json when calibration is enabled and the system has a MOF slab."""
    spec = CONFIG["systems"][wildcards.system]
    if not CONFIG["calibration"]["enabled"] or spec.get("mof_wt_percent", 0) <= 0:
        return {}
    return {"calibration": f"results/calibration/{spec['mof_metal']}/calibration.json"}
