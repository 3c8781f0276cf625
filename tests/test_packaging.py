"""Packaging: one import namespace (``spemd``) and imports that point one way between packages."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Floors of the import graph (docs/architecture.md): a module may import its own package and any
# package on a lower floor, never one on a higher floor or a sibling on the same floor.
FLOOR = {"spemd": 0, "spemd.systems": 1, "spemd.analysis": 1, "spemd.forcefields": 2, "spemd.pipeline": 3}
FOLDER = {"spemd": "spemd", "systems": "spemd.systems", "analysis": "spemd.analysis",
          "forcefields": "spemd.forcefields", "pipeline": "spemd.pipeline"}
# Entry shims sit above everything: `python -m spemd` starts the CLI.
ENTRY_POINTS = {"spemd/__main__.py"}


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "spemd":
        return None
    if len(parts) > 1 and f"spemd.{parts[1]}" in FLOOR:
        return f"spemd.{parts[1]}"
    return "spemd"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):  # walk: imports inside functions count too
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "spemd":  # `from spemd import units` names the module in the alias
                found += [f"spemd.{a.name}" for a in node.names]
            else:
                found.append(node.module)
    return found


def _violations() -> list[str]:
    bad = []
    for folder, package in FOLDER.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ENTRY_POINTS:
                continue
            for module in _imports(path):
                if module.split(".")[0] in {"pipeline", "systems", "forcefields", "analysis"}:
                    bad.append(f"{rel}: imports {module} outside the spemd namespace")
                target = _package_of(module)
                if target is None or target == package:
                    continue
                if FLOOR[target] >= FLOOR[package]:
                    bad.append(f"{rel} ({package}) imports {module} ({target}, same or higher floor)")
    return sorted(set(bad))


def test_imports_point_one_way():
    assert _violations() == []


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    # the rule is live: a plumbing module that imported the CLI would be reported
    fake = tmp_path / "spemd"
    fake.mkdir()
    (fake / "bad.py").write_text("from spemd.pipeline.cli import main\n")
    (tmp_path / "systems").mkdir()
    (tmp_path / "systems" / "ok.py").write_text("from spemd import units\nfrom spemd.forcefields import x\n")
    for folder in ("analysis", "forcefields", "pipeline"):
        (tmp_path / folder).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = _violations()
    assert len(found) == 2
    assert any("spemd/bad.py" in v and "spemd.pipeline" in v for v in found)
    assert any("systems/ok.py" in v and "spemd.forcefields" in v for v in found)


@pytest.mark.slow
def test_wheel_installs_only_spemd_at_top_level(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("spemd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"spemd"}
    for expected in ("spemd/pipeline/cli.py", "spemd/systems/build.py", "spemd/forcefields/tfsi.xml", "spemd/forcefields/calibration.json",
                     "spemd/analysis/msd.py", "spemd/schema/config.schema.yaml", "spemd/__main__.py"):
        assert expected in names


def test_python_dash_m_spemd():
    out = subprocess.run([sys.executable, "-m", "spemd", "--help"], capture_output=True, text=True,
                         cwd="/", check=True).stdout
    assert "validate" in out and "parametrise" in out
