"""The front door: the docs site builds cleanly, its generated pages match their sources, the version is one.

- docs/configuration.md is rendered from the config schema (spemd.config_reference); after a schema change
  regenerate it with ``python -m spemd.config_reference docs/configuration.md``.
- ``mkdocs build --strict`` fails on any warning: a broken link between pages, a missing anchor, a page
  left out of the navigation.
- docs/outputs.md names every summary.csv column and every transport.json key.
- ``spemd --version`` prints the installed package's version, which is pyproject.toml's and the one
  provenance records.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from spemd.config import load_schema
from spemd.config_reference import render

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "python -m spemd.config_reference docs/configuration.md"


def test_configuration_reference_matches_the_schema():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render(), f"docs/configuration.md differs from the schema; regenerate: {REGENERATE}"


def _key_paths(schema, path):
    """Every key below `path`, free names (pattern or additional properties) as `*`, list items as `[]`."""
    children = [(f"{path}.{k}", sub) for k, sub in (schema.get("properties") or {}).items()]
    children += [(f"{path}.*", sub) for sub in (schema.get("patternProperties") or {}).values()]
    if isinstance(schema.get("additionalProperties"), dict):
        children.append((f"{path}.*", schema["additionalProperties"]))
    if isinstance(schema.get("items"), dict):
        children += [(f"{path}[].{k}", sub) for k, sub in (schema["items"].get("properties") or {}).items()]
    for child, sub in children:
        yield child
        yield from _key_paths(sub, child)


def test_configuration_reference_lists_every_key_with_its_description_and_default():
    schema = load_schema()
    page = render(schema)
    rows = {re.sub(r"<[^>]*>", "*", m.group(1)): m.group(0) for m in re.finditer(r"^\| `([^`]+)` \|.*$", page, re.M)}
    assert set(re.findall(r"^## `([^`]+)`$", page, re.M)) == set(schema["properties"])
    keys = [k for top, sub in schema["properties"].items() for k in _key_paths(sub, top)]
    assert len(keys) > 50
    missing = [k for k in keys if k not in rows]
    assert not missing, f"keys missing from the configuration reference: {missing}"
    row = rows["forcefield.charge_scale"]
    assert "`0.8`" in row and "> 0, ≤ 1" in row and "Na+ and TFSI- charges" in row
    assert "one of `auto`, `CUDA`, `OpenCL`, `CPU`, `Reference`" in rows["platform.name"]
    assert "| required |" in rows["protocol.stages[].name"]
    assert "| required |" in rows["forcefield.metal_o_tfsi.*.sigma_nm"]


def test_docs_build_strict_without_warnings(tmp_path):
    # no --quiet: it drops the warnings before --strict can count them
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


def test_outputs_reference_names_every_summary_column():
    from spemd.analysis.summary import COLUMNS

    page = (ROOT / "docs" / "outputs.md").read_text()
    columns = ["system", "temperature_K", "replica"]
    for col, err, *_ in COLUMNS:
        columns += [col] + ([err] if err else [])
    missing = [c for c in columns if f"`{c}`" not in page]
    assert not missing, f"summary.csv columns not described in docs/outputs.md: {missing}"


def _key_names(node, names, below_free_names=False):
    """Every key of a JSON tree except provenance's, skipping the free names under rdf/diffusion/n_ions."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "provenance":
                continue
            if not below_free_names:
                names.add(key)
            _key_names(value, names, below_free_names=key in ("rdf", "diffusion", "n_ions"))
    elif isinstance(node, list):
        for item in node:
            _key_names(item, names)
    return names


def test_outputs_reference_names_every_transport_json_key(tmp_path):
    from spemd.analysis.production import analyse_production

    data = ROOT / "tests" / "data"
    result = analyse_production(data / "tiny_electrolyte.pdb", data / "tiny_electrolyte.dcd", tmp_path,
                                {"rdf_bins": 100}, 0.8, 353.0, {"system": "tiny", "replica": 0})
    page = (ROOT / "docs" / "outputs.md").read_text()
    names = _key_names(result, set())
    assert {"D_cm2_per_s", "sigma_EH_S_per_cm", "first_shell_cn", "g_corrected", "free_fraction"} <= names
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert not missing, f"transport.json keys not described in docs/outputs.md: {missing}"


def test_version_is_pyprojects_and_printed_and_recorded(capsys):
    from spemd.pipeline.cli import main
    from spemd.provenance import provenance

    declared = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert metadata.version("spemd") == declared, "installed metadata is stale: reinstall (pip install -e .)"
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"spemd {declared}"
    assert provenance()["packages"]["spemd"] == declared


def test_citation_cff_carries_this_version_and_the_paper():
    # full schema validation: `cffconvert --validate -i CITATION.cff` (cffconvert pins an old jsonschema,
    # so it is not a test dependency); this guards what drifts: the version and the paper's DOI
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["authors"]
    assert cff["version"] == metadata.version("spemd")
    assert cff["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert [r["doi"] for r in cff["references"]] == ["10.1039/d5eb00117j"]
