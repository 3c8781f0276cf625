"""Checkpoint records: the ``checkpoint.json`` sidecar beside every ``checkpoint.chk``.

The record holds step, time step, atom count, platform, OpenMM version, the checkpoint's SHA-256 and the
stage's ``inputs`` hashes. The engine writes the pair (``_write_checkpoint`` in :mod:`pipeline.engine`:
record to ``checkpoint.json.new``, checkpoint, then the record's rename); :func:`verify_checkpoint`
checks it before a resume and promotes a ``.new`` whose hash matches (a kill between the renames).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import openmm

from spemd.errors import SimulationError
from spemd.provenance import sha256_file


def sidecar_path(ckpt_path: Path) -> Path:
    return ckpt_path.with_suffix(".json")


def checkpoint_record(step: int, dt_fs: float, n_atoms: int, platform_name: str) -> dict:
    return {"step": int(step), "timestep_fs": float(dt_fs), "n_atoms": int(n_atoms),
            "platform": platform_name, "openmm_version": openmm.__version__}


def verify_checkpoint(ckpt_path: Path, dt_fs: float, n_atoms: int, platform_name: str) -> dict | None:
    """The checkpoint's sidecar record if it matches this run and the file's SHA-256; else SimulationError.

    None for a checkpoint without a sidecar (written before sidecars existed): usable, but unverified.
    """
    side = sidecar_path(ckpt_path)
    pending = side.with_name(side.name + ".new")
    if pending.is_file():  # killed between the checkpoint's rename and its record's (_write_checkpoint)
        try:
            matches = json.loads(pending.read_text()).get("sha256") == sha256_file(ckpt_path)
        except ValueError:
            matches = False
        if matches:
            os.replace(pending, side)
        else:
            pending.unlink()
    if not side.is_file():
        return None
    try:
        record = json.loads(side.read_text())
        expected = {k: record[k] for k in ("step", "timestep_fs", "n_atoms", "platform", "openmm_version", "sha256")}
    except (ValueError, KeyError, TypeError) as exc:
        raise SimulationError(f"{side}: unreadable checkpoint record ({type(exc).__name__}: {exc}); delete the stage folder to restart it") from None
    actual = checkpoint_record(expected["step"], dt_fs, n_atoms, platform_name)
    actual["sha256"] = sha256_file(ckpt_path)
    if actual["sha256"] != expected["sha256"]:
        raise SimulationError(
            f"{ckpt_path}: corrupt or truncated (SHA-256 differs from {side.name}, {ckpt_path.stat().st_size} bytes on disk); "
            "delete the stage folder to restart the stage"
        )
    what = {"timestep_fs": "protocol.timestep_fs", "n_atoms": "atom count", "platform": "platform",
            "openmm_version": "OpenMM version"}
    for key, label in what.items():
        if actual[key] != expected[key]:
            raise SimulationError(
                f"{ckpt_path}: written with {label} {expected[key]!r}, this run has {actual[key]!r}; "
                f"resume with the same {label} or delete the stage folder to restart the stage"
            )
    return expected


def checkpoint_record_on_disk(ckpt_path: Path) -> dict | None:
    """checkpoint.json (or the pending .new of a run killed between the two renames), unverified; None if absent."""
    side = sidecar_path(ckpt_path)
    for path in (side, side.with_name(side.name + ".new")):
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except ValueError:
                return None  # verify_checkpoint reports it
            return record if isinstance(record, dict) else None
    return None
