"""Where the packaged data files are.

The force-field XML files are data shipped inside :mod:`spemd.forcefields`; the box builders read one
of them (TFSI- is relaxed to its CL&P minimum) without importing force-field code, so the lookup is
here, on the ground floor, by package resource rather than by import.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def forcefield_dir() -> Path:
    """The folder holding the force-field XML files (``forcefields/`` in a checkout)."""
    return Path(str(resources.files("spemd.forcefields")))


def forcefield_xml(name: str) -> Path:
    """Path of one force-field XML file, e.g. ``forcefield_xml("tfsi.xml")``."""
    return forcefield_dir() / name
