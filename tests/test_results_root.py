"""Each config writes under its own results root (config key results_dir): the paper's study run beside a
finished default run schedules nothing of it. The same dry runs show the job sizes (pipeline/job_sizes.py
through rules/common.smk's input functions) growing with the box and the stage."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spemd.errors import ConfigError
from spemd.pipeline import job_sizes
from spemd.systems.plan import planned_counts

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())


def snakemake(*args, cwd):
    out = subprocess.run([str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(cwd),
                          "--cores", "1", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def jobs(dry_run_stdout):
    """One dict per job a dry run lists: rule, wildcards, outputs + logs ("files"), resources."""
    found = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_stdout):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m:
            continue
        job = {"rule": m.group(1), "files": [], "wildcards": {}, "resources": {}}
        for line in block.splitlines():
            key, _, value = line.strip().partition(": ")
            if key in ("output", "log"):
                job["files"] += [p.strip() for p in value.split(",")]
            elif key in ("wildcards", "resources"):
                job[key] = dict(kv.split("=", 1) for kv in value.split(", ") if "=" in kv)
        found.append(job)
    return found


@pytest.fixture(scope="module")
def beside_default(tmp_path_factory):
    """A folder with a (faked) finished default run, its dry-run jobs and the paper study's dry run there."""
    work = tmp_path_factory.mktemp("beside_default")
    shutil.copytree(ROOT / "config", work / "config")
    default = jobs(snakemake("-n", cwd=work))
    # every output present, then stamped in rule order (--touch): the run is finished for Snakemake
    for job in default:
        for p in job["files"]:
            target = work / p
            if job["rule"] == "analyse" and p.endswith("figures"):
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
    snakemake("--touch", cwd=work)
    assert "Nothing to be done" in snakemake("-n", cwd=work)
    return default, jobs(snakemake("-n", "--configfile", "config/paper.yaml", cwd=work))


@pytest.mark.slow
def test_paper_study_beside_a_finished_default_run_schedules_nothing_of_it(beside_default):
    default, paper = beside_default
    default_files = {p for job in default for p in job["files"]}
    assert any(p.startswith("results/PEO/") for p in default_files) and "logs/summarise.log" in default_files
    paper_files = {p for job in paper for p in job["files"]}
    assert {"build", "md_stage", "analyse", "summarise", "study"} <= {job["rule"] for job in paper}
    assert sum(job["rule"] == "build" for job in paper) == 8 * 3  # 8 systems x 3 replicas
    assert not paper_files & default_files
    outside = sorted(p for p in paper_files if not p.startswith("results/paper/"))
    assert not outside, outside[:5]


@pytest.mark.slow
def test_job_resources_scale_with_the_box_and_the_stage(beside_default):
    default, paper = beside_default
    counts = {name: planned_counts(name, spec) for name, spec in PAPER["systems"].items()}
    atoms = {name: c["atoms"] for name, c in counts.items()}
    frames = 100000 // 10  # paper production: 100 ns, a frame every 10 ps

    def res(rule, system, stage=None, runs=paper):
        for job in runs:
            w = job["wildcards"]
            if job["rule"] == rule and w.get("system") == system and (stage is None or w.get("stage") == stage):
                return int(job["resources"]["mem_mb"]), int(job["resources"]["runtime"])
        raise AssertionError(f"no {rule} job for {system} {stage}")

    by_size = sorted(atoms, key=atoms.get)
    assert by_size[0] == "PEO" and by_size[-1] == "CPE-3"  # 22,344 ... 183,930 atoms
    for rule in ("build", "parametrise", "minimise", "analyse"):
        mems = [res(rule, s)[0] for s in by_size]
        assert mems == sorted(mems) and mems[-1] > 2 * mems[0], (rule, mems)
    for s in atoms:  # the input functions pass the planned atoms (and the production's frames)
        assert res("build", s) == (job_sizes.mem_mb("build", atoms[s]), job_sizes.runtime_min("build", atoms[s]))
        assert res("analyse", s)[0] == job_sizes.mem_mb("analyse", atoms[s], frames, 2 * counts[s]["salt_pairs"])
    # MD runtime from atoms x stage length: the 100 ns production outlasts the 0.5 ns anneal, a bigger box
    # takes longer (CPE-3 reaches the 24 h cap; a stage past it resumes in the next attempt)
    prod = {s: res("md_stage", s, "production")[1] for s in atoms}
    assert res("md_stage", "PEO", "anneal")[1] < prod["PEO"] < prod["CPE-10"] < prod["CPE-3"] == 1440
    assert prod["PEO"] == job_sizes.runtime_min("md_stage", atoms["PEO"], 100000.0)
    # minimise: 5,000 iterations at 4 fs count as 4 x 5,000 MD steps = 80 ps
    assert res("minimise", "CPE-10")[1] == job_sizes.runtime_min("minimise", atoms["CPE-10"], 80.0) > 10
    # the default run's small boxes get less than the paper's
    assert res("build", "PEO", runs=default)[0] < res("build", "PEO")[0]


def test_job_size_formulas(monkeypatch):
    base = job_sizes.mem_mb("build", 0)
    assert base == 100 * -(-job_sizes.SAFETY * job_sizes.BASE_MIB["build"] * 1.048576 // 100)
    big = job_sizes.mem_mb("build", 1_000_000)
    assert big - base == pytest.approx(job_sizes.SAFETY * 1.048576 * job_sizes.PER_ATOM_KIB["build"] * 1e6 / 1024,
                                       abs=100)
    # analyse: + 192 bytes per ion and frame (CPE-3's 2,270 ions x 10,001 frames: 4.06 GiB before SAFETY)
    assert job_sizes.mem_mb("analyse", 0, 10001, 2270) - job_sizes.mem_mb("analyse", 0) == pytest.approx(
        job_sizes.SAFETY * 1.048576 * 192 * 2270 * 10001 / 2**20, abs=100)
    monkeypatch.delenv("SPEMD_ATOM_NS_PER_DAY", raising=False)
    # 22,344 atoms x 100 ns at 1.54e7 atom ns/day: 1.25 x 1440 x 0.1451 = 261.2 min, + 10
    assert job_sizes.runtime_min("md_stage", 22344, 100000.0) == 272
    assert job_sizes.runtime_min("md_stage", 22344, 100000.0, attempt=2) == 543
    assert job_sizes.runtime_min("md_stage", 22344, 100000.0, attempt=4) == 1440
    monkeypatch.setenv("SPEMD_ATOM_NS_PER_DAY", "3.08e7")  # twice as fast a card: half the MD work
    assert job_sizes.runtime_min("md_stage", 22344, 100000.0) == 141
    assert job_sizes.minimise_equivalent_ps(5000, 4.0) == 80.0
    assert job_sizes.minimise_equivalent_ps(0, 4.0) == 160.0  # "until converged": sized as 10,000 iterations
    monkeypatch.setenv("SPEMD_ATOM_NS_PER_DAY", "fast")
    with pytest.raises(ConfigError, match="SPEMD_ATOM_NS_PER_DAY: 'fast' is not a number"):
        job_sizes.runtime_min("md_stage", 1000, 10.0)
    with pytest.raises(ConfigError, match="job: 'md' is not allowed"):
        job_sizes.mem_mb("md", 1000)
