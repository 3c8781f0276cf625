# Config loading, validation and input functions shared by all rule files.
import json
import sys

from spemd.config import validate_config
from spemd.pipeline.gpus import count_gpus
from spemd.errors import ConfigError


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
