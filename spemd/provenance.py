"""What produced an output: package versions, seed, config and force-field file hashes.

Every results JSON and every ``done.json`` embeds :func:`provenance` under the key ``"provenance"``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform as _platform
import sys
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = ("spemd", "openmm", "numpy", "scipy", "mdtraj", "MDAnalysis", "parmed", "snakemake")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance(*, seed=None, config=None, forcefield_files=(), inputs=(), extra=None) -> dict:
    """A provenance record.

    Parameters
    ----------
    seed : the random seed used (or None where nothing random happened)
    config : the (validated) config dict or the part of it that mattered
    forcefield_files : paths of force-field files; recorded with their SHA-256
    inputs : other input files; recorded with their SHA-256
    extra : anything else worth recording (platform, device...)
    """
    record = {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "host": _platform.node(),
        "packages": package_versions(),
        "seed": seed,
        "config": config,
        "forcefield_files": {Path(p).name: sha256_file(p) for p in forcefield_files},
        "inputs": {str(p): sha256_file(p) for p in inputs},
    }
    if extra:
        record.update(extra)
    return record
