"""Every bad input a user can plausibly type is stopped with one line naming the key and the allowed values.

The config table runs through `validate_config` (what `spemd validate` and the Snakefile call before any
job); the rest go through the `spemd` command line, which must print one line (no traceback) and leave
no output behind.
"""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from spemd.config import load_config, validate_config
from spemd.errors import ConfigError
from spemd.pipeline import cli, gpus

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
NAN, INF = float("nan"), float("inf")
DROP = object()


def _set(config, path, value):
    *parents, last = path.split(".")
    node = config
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is DROP:
        del node[last]
    else:
        node[last] = value


# (key path, bad value, text the message must contain: the key, then what is allowed)
BAD = [
    ("temperatures_K", [NAN], "temperatures_K.0: nan is not allowed; allowed values: finite numbers"),
    ("temperatures_K", [INF], "temperatures_K.0: inf is not allowed; allowed values: finite numbers"),
    ("temperatures_K", [-INF], "temperatures_K.0: -inf is not allowed"),
    ("temperatures_K", [1e9], "temperatures_K.0: 1000000000.0 is out of range; must be <= 1500"),
    ("temperatures_K", [353, 353], "temperatures_K: [353, 353] repeats a value; allowed values: distinct items"),
    ("temperatures_K", [0], "temperatures_K.0: 0 is out of range; must be > 0"),
    ("temperatures_K", [], "temperatures_K: [] should be non-empty"),
    ("protocol.stages.2.name", "minimise", "protocol.stages.2.name: 'minimise' is reserved"),
    ("protocol.stages.1.name", "anneal", "protocol.stages: stage name 'anneal' appears more than once"),
    ("protocol.stages.2.time_ps", 10.001, "protocol.stages.2.time_ps: 10.001 ps is not a whole number of protocol.timestep_fs (4.0 fs) steps; allowed values: multiples of 0.004 ps"),
    ("protocol.stages.2.trajectory_interval_ps", 0.21, "protocol.stages.2.trajectory_interval_ps: 0.21 ps is not a whole number"),
    ("protocol.stages.2.state_interval_ps", 0.003, "protocol.stages.2.state_interval_ps: 0.003 ps is not a whole number"),
    ("protocol.stages.1.max_time_ps", 16.002, "protocol.stages.1.max_time_ps: 16.002 ps is not a whole number"),
    ("protocol.stages.2.time_ps", 0, "protocol.stages.2.time_ps: 0 is out of range; must be > 0"),
    ("protocol.stages.0.temperature_K", [NAN, "run"], "protocol.stages.0.temperature_K.0: nan is not allowed"),
    ("protocol.stages.1.temperature_K", 1e9, "protocol.stages.1.temperature_K: 1000000000.0 is out of range; must be <= 1500"),
    ("protocol.stages.2.ensemble", "NVE", "protocol.stages.2.ensemble: 'NVE' is not allowed; allowed values: 'NVT', 'NPT'"),
    ("protocol.stages.1.until", "plateau", "protocol.stages.1.until: 'plateau' is not allowed; allowed values: 'density_plateau'"),
    ("protocol.stages.2.temp_K", 300, "unknown key protocol.stages.2.temp_K; allowed keys here:"),
    ("protocol.timestep_fs", INF, "protocol.timestep_fs: inf is not allowed"),
    ("protocol.barostat_interval", 2.5, "protocol.barostat_interval: 2.5 has the wrong type; expected integer"),
    ("analysis.msd_fit_start_fraction", 0.5, "analysis.msd_fit_start_fraction: 0.5 is not below analysis.msd_fit_end_fraction (0.5); allowed values: 0 <= start < end <= 1"),
    ("analysis.msd_fit_end_fraction", 0.05, "analysis.msd_fit_start_fraction: 0.1 is not below analysis.msd_fit_end_fraction (0.05)"),
    ("analysis.rdf_bins", 5, "analysis.rdf_bins: 5 is out of range; must be >= 10"),
    ("forcefield.hydrogen_mass_amu", 1.008, "forcefield.hydrogen_mass_amu: 1.008 amu is too light for protocol.timestep_fs 4.0 fs; allowed values: >= 1.5 amu"),
    ("forcefield.hydrogen_mass_amu", None, "protocol.timestep_fs: 4.0 fs needs hydrogen mass repartitioning"),
    ("forcefield.nonbonded_cutoff_nm", 50, "forcefield.nonbonded_cutoff_nm: 50 is out of range; must be <= 3.0"),
    ("forcefield.nonbonded_cutoff_nm", NAN, "forcefield.nonbonded_cutoff_nm: nan is not allowed"),
    ("forcefield.charge_scale", 1.5, "forcefield.charge_scale: 1.5 is out of range; must be <= 1"),
    ("forcefield.sodium", "foo", "forcefield.sodium: 'foo' is not allowed; allowed values: 'aqvist', 'joung_cheatham_spce'"),
    ("systems.CPE.mof_wt_percent", 0.0001, "systems.CPE.mof_wt_percent: 0.0001 would need an enormous box of chains around one slab; allowed values: 0 (no MOF) or 1 to < 50"),
    ("systems.CPE.mof_wt_percent", 50, "systems.CPE.mof_wt_percent: 50 is out of range; must be < 50"),
    ("systems.CPE.mof_cells", [1, 1], "systems.CPE.mof_cells: [1, 1] is too short"),
    ("systems.CPE.mof_metal", "Zn", "systems.CPE.mof_metal: 'Zn' is not allowed; allowed values: 'FeNi', 'Fe', 'Ni', 'Cu'"),
    ("systems.PEO.eo_per_chain", 2.0, "systems.PEO.eo_per_chain: 2.0 is not an integer; allowed values: whole numbers without a decimal point (e.g. 2)"),
    ("systems.PEO.eo_per_chain", 1, "systems.PEO.eo_per_chain: 1 is out of range; must be >= 2"),
    ("systems.PEO.chains", 12.5, "systems.PEO.chains: 12.5 has the wrong type; expected integer"),
    ("systems.PEO.chains", DROP, "systems.PEO.chains: required when mof_wt_percent is 0"),
    ("platform.name", "GPU", "platform.name: 'GPU' is not allowed; allowed values: 'auto', 'CUDA', 'OpenCL', 'CPU', 'Reference'"),
    ("platform.precision", "half", "platform.precision: 'half' is not allowed; allowed values: 'mixed', 'single', 'double'"),
    ("replicas", 0, "replicas: 0 is out of range; must be >= 1"),
    ("seed", -1, "seed: -1 is out of range; must be >= 0"),
    ("sytems", {}, "unknown key sytems; allowed keys here:"),
]


@pytest.mark.parametrize("path,value,expected", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_config_is_one_line_naming_the_key(path, value, expected):
    config = copy.deepcopy(BASE)
    _set(config, path, value)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert "\n" not in message
    assert expected in message, message


def test_the_table_is_big_enough_and_the_base_is_valid():
    assert len(BAD) >= 30
    validate_config(copy.deepcopy(BASE))


def test_nan_from_the_snakemake_command_line_is_caught():
    # `--config temperatures_K=[nan]` arrives as strings; coercion must not turn it into an accepted NaN
    with pytest.raises(ConfigError, match=r"temperatures_K\.0: nan is not allowed"):
        validate_config({**copy.deepcopy(BASE), "temperatures_K": ["nan"]})


def _spemd(argv, capsys):
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def test_non_utf8_config_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("seed: 1\n# Temperatur in °C\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte \d+\); save the config as UTF-8"):
        load_config(path)
    rc, err = _spemd(["validate", "--config", str(path)], capsys)
    assert rc == 1 and len(err.splitlines()) == 1 and "not UTF-8" in err


def test_unwritable_output_folder_is_one_line_and_leaves_nothing(tmp_path, capsys):
    from spemd.pipeline.testsystems import water_params

    params = water_params(tmp_path / "params")
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should be\n")  # fails even as root, unlike chmod
    cfg = {"protocol": {"timestep_fs": 2.0, "stages": [{"name": "p", "ensemble": "NVT", "time_ps": 0.02}]},
           "platform": {"name": "Reference"}}
    rc, err = _spemd(["md", "--config-json", json.dumps(cfg), "--params", str(params), "--stage", "p",
                      "--temperature", "300", "--start", str(tmp_path / "none.xml"), "--out", str(blocker / "md" / "p")],
                     capsys)
    assert rc == 1, err
    assert len(err.splitlines()) == 1 and err.startswith(f"spemd md: error: {blocker}/md") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params", "results"]


def test_config_json_missing_section_is_one_line(tmp_path, capsys):
    rc, err = _spemd(["md", "--config-json", json.dumps({"platform": {"name": "Reference"}}), "--params", str(tmp_path),
                      "--stage", "production", "--temperature", "300", "--start", str(tmp_path / "s.xml"),
                      "--out", str(tmp_path / "out")], capsys)
    assert rc == 1
    assert err == "spemd md: error: --config-json: section 'protocol' is missing; `spemd md` needs: protocol"
    assert not (tmp_path / "out").exists()


def test_analyse_run_with_missing_params_is_one_line(tmp_path, capsys):
    rc, err = _spemd(["analyse-run", "--config-json", "{}", "--params", str(tmp_path / "nope"),
                      "--production", str(tmp_path), "--temperature", "353", "--system", "PEO",
                      "--out", str(tmp_path / "out")], capsys)
    assert rc == 1
    assert err.startswith(f"spemd analyse-run: error: --params {tmp_path / 'nope'}: forcefield.json missing")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["ten", "nan", "-5"])
def test_non_numeric_gpu_wait_is_one_line_naming_the_variable(tmp_path, value):
    with pytest.raises(ConfigError, match=rf"SPEMD_GPU_WAIT_SECONDS: '{value}' is not allowed; allowed values: a number of seconds >= 0"):
        with gpus.claim_gpu(devices=["0"], lock_dir=tmp_path, environ={"SPEMD_GPU_WAIT_SECONDS": value}):
            pass


def test_claim_sets_the_device_index_openmm_will_use(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,3"}
    with gpus.claim_gpu(devices=["3"], lock_dir=tmp_path, environ=env) as device:
        assert device == "3" and env["CUDA_VISIBLE_DEVICES"] == "3"
        # in this process OpenMM is already loaded, so the mask came too late: index of "3" among "0,3"
        assert env["SPEMD_DEVICE_INDEX"] == ("1" if "openmm" in sys.modules else "0")
    assert env == {"CUDA_VISIBLE_DEVICES": "0,3"}


def test_md_cli_imports_openmm_only_after_the_gpu_claim(tmp_path):
    code = r"""
import contextlib, json, sys
from spemd.pipeline import cli, gpus
seen = []
@contextlib.contextmanager
def fake_claim(*a, **k):
    seen.append("openmm" in sys.modules)
    raise SystemExit(json.dumps(seen))
    yield
gpus.claim_gpu = fake_claim
cfg = {"protocol": {"timestep_fs": 2.0, "stages": [{"name": "p", "ensemble": "NVT", "time_ps": 0.02}]}, "platform": {"name": "auto"}}
cli.main(["md", "--config-json", json.dumps(cfg), "--params", "x", "--stage", "p", "--temperature", "300",
          "--start", "x", "--out", sys.argv[1]])
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "[false]", proc.stderr


def _write_dcd(path, n_frames, n_atoms=3):
    from spemd.pipeline.dcd import DCDWriter

    w = DCDWriter(path, n_atoms, 0.002, first_step=10, interval=10)
    rng = np.random.default_rng(0)
    for _ in range(n_frames):
        w.write(rng.random((n_atoms, 3)), np.eye(3) * 2.0)
    w.close()


def test_dcd_cut_mid_frame_warns_naming_the_frames(tmp_path):
    from spemd.analysis._common import load_universe
    from spemd.pipeline.dcd import HEADER_BYTES, frame_bytes

    pdb = tmp_path / "top.pdb"
    pdb.write_text("".join(f"ATOM  {i + 1:5d}  O   HOH A{i + 1:4d}    {i:8.3f}{0:8.3f}{0:8.3f}  1.00  0.00           O\n"
                           for i in range(3)) + "END\n")
    dcd_path = tmp_path / "t.dcd"
    _write_dcd(dcd_path, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete file: no warning at all
        assert load_universe(pdb, dcd_path).trajectory.n_frames == 5
    with open(dcd_path, "r+b") as fh:
        fh.truncate(HEADER_BYTES + 3 * frame_bytes(3) + 20)
    with pytest.warns(UserWarning) as record:
        load_universe(pdb, dcd_path)
    text = str(record[0].message)
    assert "3 complete frames on disk, frame 4 cut off after 20 of" in text
    assert "the header says 5 frames (frames 4-5 are missing)" in text


# ------------------------------------------------ analysis inputs, force-field files, YAML, disk (issue 31)

N_IONS = 4


def _ion_box(tmp_path, n_frames=6, nan_at=None):
    """4 Na+ (residue NA), 4 TFSI- (residue TFS, atom N1 only), 4 PEO units (PEM, O1) in a 2 nm box; a DCD
    of random walks, with one NaN coordinate at (frame, atom) = nan_at."""
    lines, k = [], 0
    for resname, name, elem in (("NA", "NA", "Na"), ("TFS", "N1", "N"), ("PEM", "O1", "O")):
        for i in range(N_IONS):
            k += 1
            lines.append(f"ATOM  {k:5d} {name:<4s} {resname:3s} A{k:4d}    {1.0 * i:8.3f}{2.0 * i:8.3f}{3.0:8.3f}"
                         f"  1.00  0.00          {elem:>2s}\n")
    pdb = tmp_path / "ions.pdb"
    pdb.write_text("CRYST1   20.000   20.000   20.000  90.00  90.00  90.00 P 1           1\n" + "".join(lines) + "END\n")
    from spemd.pipeline.dcd import DCDWriter

    rng = np.random.default_rng(1)
    xyz = rng.random((k, 3)) * 2.0
    w = DCDWriter(tmp_path / "ions.dcd", k, 0.002, first_step=10, interval=10)
    for f in range(n_frames):
        xyz = xyz + 0.01 * rng.standard_normal(xyz.shape)
        frame = xyz.copy()
        if nan_at is not None and f == nan_at[0]:
            frame[nan_at[1]] = np.nan
        w.write(frame, np.eye(3) * 2.0)
    w.close()
    return pdb, tmp_path / "ions.dcd"


def _analyse(kind, pdb, dcd, out, select, select2=None):
    argv = [sys.executable, "-m", "spemd", "analyse", kind, "--topology", str(pdb), "--trajectory", str(dcd),
            "--select", select, "--out", str(out), "--quiet"]
    if select2:
        argv += ["--select2", select2]
    if kind == "rdf":
        argv += ["--r-max-nm", "0.9", "--bins", "10"]
    if kind == "conductivity":
        argv += ["--temperature-K", "300"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind,select,select2", [("rdf", "resname NA", "resname TFS"), ("msd", "resname NA", None),
                                                  ("conductivity", "resname NA", "resname TFS")])
def test_nan_coordinate_names_frame_and_atom(tmp_path, kind, select, select2):
    pdb, dcd = _ion_box(tmp_path, nan_at=(3, 2))  # frame 3, atom index 2 (the third Na+)
    proc = _analyse(kind, pdb, dcd, tmp_path / "out", select, select2)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "frame 3 " in err[0] and "atom 2 (NA 3 NA)" in err[0] and "non-finite coordinate" in err[0]
    assert not (tmp_path / "out" / f"{kind}.json").exists()


@pytest.mark.parametrize("cations,anions,which", [("resname PEM", "resname TFS", "cations: net charge +0 e"),
                                                  ("resname TFS", "resname NA", "cations: net charge -4 e"),
                                                  ("resname NA", "resname NA PEM", "anions: net charge +4 e")])
def test_conductivity_species_need_opposite_non_zero_charges(tmp_path, cations, anions, which):
    pdb, dcd = _ion_box(tmp_path)
    proc = _analyse("conductivity", pdb, dcd, tmp_path / "out", cations, anions)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and f"conductivity {which}" in err[0], proc.stderr


@pytest.mark.parametrize("content", [b"", b"\x1f\x8b\x08\x00" + bytes(200)], ids=["empty", "gzipped"])
def test_unreadable_dcd_is_one_line_without_a_destructor_traceback(tmp_path, content):
    pdb, _ = _ion_box(tmp_path)
    bad = tmp_path / "bad.dcd"
    bad.write_bytes(content)
    proc = _analyse("msd", pdb, bad, tmp_path / "out", "resname NA")
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and str(bad) in proc.stderr, proc.stderr


def test_eo_per_na_that_cannot_be_met_is_a_build_error(tmp_path):
    from spemd.errors import BuildError
    from spemd.systems.build import build_box

    spec = {"eo_per_chain": 10, "chains": 12, "eo_per_na": 1000}
    with pytest.raises(BuildError, match=r"systems\.PEO\.eo_per_na: 1000 cannot be met with 120 EO \(closest: 1 Na\+, "
                                         r"EO:Na = 120"):
        build_box("PEO", spec, {}, 1, tmp_path / "build", cutoff_nm=0.9)
    assert not (tmp_path / "build").exists()


def test_non_numeric_attribute_in_system_xml_names_it(tmp_path):
    from spemd.errors import InputError
    from spemd.pipeline import engine
    from spemd.pipeline.testsystems import water_params

    params = water_params(tmp_path / "params")
    text = (params / "system.xml").read_text()
    (params / "system.xml").write_text(re.sub(r' q="[^"]*"', ' q="abc"', text, count=1))
    with pytest.raises(InputError, match=r'system\.xml: <Particle> number \d+ has q="abc", not a number'):
        engine.Params(params)


@pytest.mark.parametrize("content", ["", "<ForceField>\n <AtomTypes>\n  <Type name="], ids=["empty", "truncated"])
def test_empty_or_truncated_forcefield_xml_names_the_file(tmp_path, content):
    from spemd.errors import InputError
    from spemd.forcefields.library import load_forcefield, xml_path

    bad = tmp_path / "peo.xml"
    bad.write_text(content)
    with pytest.raises(InputError, match=rf"{bad}: (empty file|not valid XML)"):
        load_forcefield([xml_path("tfsi.xml"), bad])


def test_duplicate_yaml_key_names_the_key_and_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text((ROOT / "config" / "config.yaml").read_text() + "replicas: 3\n")
    n = len(path.read_text().splitlines())
    first = 1 + next(i for i, line in enumerate(path.read_text().splitlines()) if line.startswith("replicas:"))
    with pytest.raises(ConfigError, match=rf"dup\.yaml: key 'replicas' is given twice \(lines {first} and {n}\)"):
        load_config(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("systems:\n  PEO: {eo_per_chain: 10, chains: 12, eo_per_na: 20}\n  PEO: {eo_per_chain: 5}\n")
    with pytest.raises(ConfigError, match=r"key 'PEO' is given twice \(lines 2 and 3\)"):
        load_config(nested)


def test_duplicate_key_in_a_snakemake_configfile_stops_before_any_job(tmp_path):
    config = tmp_path / "dup.yaml"
    config.write_text((ROOT / "config" / "config.yaml").read_text() + "replicas: 3\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"), "-n",
                          "--cores", "1", "--configfile", str(config)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1 and "key 'replicas' is given twice" in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "results").exists()


def test_unwritable_results_folder_stops_before_snakemake_starts(tmp_path):
    (tmp_path / "results").write_text("a file where the results folder should be\n")  # fails even as root
    shutil.copytree(ROOT / "config", tmp_path / "config")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"),
                          "--cores", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert f"error: {tmp_path / 'results'}: Not a directory; the workflow needs to write there" in out.stderr
    assert "Traceback" not in out.stderr


def test_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    import errno

    from spemd.files import write_text_atomic

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as info:
        write_text_atomic(tmp_path / "transport.json", "{}")
    assert info.value.filename == str(tmp_path / "transport.json") and info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_full_disk_during_md_names_the_trajectory(tmp_path):
    import errno

    from spemd.pipeline.dcd import DCDWriter

    w = DCDWriter(tmp_path / "trajectory.dcd", 3, 0.002, first_step=10, interval=10)
    w._fh.close()
    w._fh = open("/dev/full", "wb", buffering=0)  # every write: ENOSPC, as on a full disk
    with pytest.raises(OSError) as info:
        w.write(np.zeros((3, 3)), np.eye(3) * 2.0)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "trajectory.dcd")
    w.close()
