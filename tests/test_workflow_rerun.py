"""A changed input never reuses an old trajectory: one tiny workflow run, then four reruns.

Changing the seed, the charge scale or the friction, or running with --forceall, after a finished run
must re-simulate the MD stage from its start (not "resume" the finished checkpoint): the trajectory
changes (or, for --forceall, is simulated again) and done.json records the new inputs.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
STAGE_DIR = "results/PEO/rep0/353K/md/production"

# the smallest box the builder accepts at a 0.7 nm cutoff (~450 atoms), one 100-step NVT stage
TINY = {
    "seed": 7,
    "replicas": 1,
    "temperatures_K": [353],
    "platform": {"name": "CPU"},
    "forcefield": {"charge_scale": 0.8, "nonbonded_cutoff_nm": 0.7, "hydrogen_mass_amu": 1.5},
    "build": {"start_density_g_cm3": 0.6, "target_density_g_cm3": 1.15},
    "systems": {"PEO": {"eo_per_chain": 5, "chains": 8, "eo_per_na": 10, "mof_wt_percent": 0}},
    "protocol": {
        "timestep_fs": 4.0,
        "minimise_max_iterations": 50,
        "stages": [{"name": "production", "ensemble": "NVT", "time_ps": 0.4, "trajectory_interval_ps": 0.04,
                    "state_interval_ps": 0.04}],
    },
}


def _run(work: Path, config: dict, *extra):
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile",
         str(work / "config.yaml"), "--cores", "2", *extra, f"{STAGE_DIR}/done.json"],
        cwd=work, env={**ENV, "OPENMM_CPU_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    stage = work / STAGE_DIR
    return hashlib.md5((stage / "trajectory.dcd").read_bytes()).hexdigest(), json.loads((stage / "done.json").read_text())


@pytest.mark.slow
def test_seed_charge_scale_friction_and_forceall_each_resimulate(tmp_path):
    first_md5, first = _run(tmp_path, TINY)
    assert first["seed"] == 7 and first["steps_this_run"] == 100
    seen = {first_md5}
    changes = {
        "seed": ({**TINY, "seed": 8}, ()),
        "charge_scale": ({**TINY, "seed": 8, "forcefield": {**TINY["forcefield"], "charge_scale": 0.7}}, ()),
        "friction": ({**TINY, "seed": 8, "forcefield": {**TINY["forcefield"], "charge_scale": 0.7},
                      "protocol": {**TINY["protocol"], "friction_per_ps": 5.0}}, ()),
    }
    for what, (config, extra) in changes.items():
        md5, done = _run(tmp_path, config, *extra)
        # simulated from step 0 again, not "resumed from checkpoint at step 100 of 100"
        assert done["resumed_from_step"] is None and done["steps_this_run"] == 100, what
        assert md5 not in seen, f"{what}: the trajectory did not change"
        seen.add(md5)
    assert done["seed"] == 8
    params = json.loads((tmp_path / "results/PEO/rep0/params/forcefield.json").read_text())
    assert params["charge_scale"] == 0.7
    last_inputs = done["inputs"]
    md5, done = _run(tmp_path, changes["friction"][0], "--forceall")
    assert done["resumed_from_step"] is None and done["steps_this_run"] == 100
    assert done["inputs"]["config"] == last_inputs["config"]
    assert not (tmp_path / (STAGE_DIR + ".replaced")).exists()  # the set-aside run is gone once this one finished
