"""MD jobs' threads (rules/common.smk md_threads): the cores shared among the unfinished simulations.

Dry runs of the default workflow: while both simulations (PEO, CPE) are unfinished each MD job gets
half the cores; once one has its production done.json, the other's MD jobs get all of them (at most 1 + the
idle CPUs, a cap turned off here except in its own test); set-threads
(the profiles' way, e.g. GPU jobs) still wins. The MD shell commands pass {threads} to OpenMM.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# the cap at the idle CPUs (which depends on the machine's load) is off here; tested on its own below
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "SPEMD_MD_THREADS_IDLE_CAP": "0"}
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
MD_RULES = ("minimise", "md_stage")


def dry_run_threads(cwd: Path, *args, env=ENV) -> dict[tuple[str, str], set[int]]:
    """{(rule, system): thread counts} of the MD jobs in `snakemake -n` (threads: 1 is not printed)."""
    out = subprocess.run(
        [str(BIN / "snakemake"), "-n", "-s", str(ROOT / "Snakefile"), "--directory", str(cwd), *args],
        cwd=cwd, env=env, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found: dict[tuple[str, str], set[int]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out.stdout):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m or m.group(1) not in MD_RULES:
            continue
        system = re.search(r"results/(\w+)/rep", block).group(1)
        t = re.search(r"^\s+threads: (\d+)$", block, re.M)
        found.setdefault((m.group(1), system), set()).add(int(t.group(1)) if t else 1)
    return found


def _workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    return tmp_path


def test_md_jobs_share_the_cores_among_unfinished_simulations(tmp_path):
    work = _workdir(tmp_path)
    systems = list(DEFAULT["systems"])
    assert len(systems) == 2 and DEFAULT["replicas"] == 1 and len(DEFAULT["temperatures_K"]) == 1
    threads = dry_run_threads(work, "--cores", "8")
    assert set(threads) == {(r, s) for r in MD_RULES for s in systems}
    assert all(t == {4} for t in threads.values()), threads  # two unfinished simulations: 8 // 2 each
    assert all(t == {1} for t in dry_run_threads(work, "--cores", "2").values())


def test_the_last_simulation_gets_all_the_cores(tmp_path):
    work = _workdir(tmp_path)
    first, last = list(DEFAULT["systems"])
    T = f"{DEFAULT['temperatures_K'][0]:g}"
    production = DEFAULT["protocol"]["stages"][-1]["name"]
    done = work / f"results/{first}/rep0/{T}K/md/{production}/done.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    threads = dry_run_threads(work, "--cores", "8")
    assert threads[("md_stage", last)] == {8} and threads[("minimise", last)] == {8}, threads


def test_idle_cap_keeps_the_share_within_the_free_cpus(tmp_path):
    work = _workdir(tmp_path)
    threads = dry_run_threads(work, "--cores", "64", env={**ENV, "SPEMD_MD_THREADS_IDLE_CAP": "1"})
    assert all(1 <= n <= 1 + (os.cpu_count() or 1) for t in threads.values() for n in t), threads


def test_set_threads_overrides_md_threads(tmp_path):
    work = _workdir(tmp_path)
    threads = dry_run_threads(work, "--cores", "8", "--set-threads", "minimise=1", "md_stage=1")
    assert all(t == {1} for t in threads.values()), threads


def test_md_commands_give_openmm_the_jobs_threads():
    text = (ROOT / "rules" / "simulate.smk").read_text()
    for rule in MD_RULES:
        body = text.split(f"rule {rule}:")[1].split("\nrule ")[0]
        assert "threads: md_threads" in body and "OPENMM_CPU_THREADS={threads}" in body, rule
    for name in ("workstation", "slurm", "slurm-test"):  # GPU profiles: one CPU thread per GPU job
        profile = yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())
        assert all(profile["set-threads"][rule] == 1 for rule in MD_RULES), name
