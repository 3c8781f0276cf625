"""Minimal CHARMM/NAMD DCD writer with exact truncation, for resumable trajectories.

The layout is the one ``openmm.app.DCDFile`` writes (readable by mdtraj, MDAnalysis, VMD): a 276-byte
header (frame count at byte 8, step of the first frame at 12, steps between frames at 16, step of the
last frame at 20, time step in AKMA units at 44), then per frame a unit-cell record (6 doubles, lengths
in Angstrom) and the x, y, z blocks (float32, Angstrom), each wrapped in Fortran record markers.

Differences from ``DCDFile``: positions are converted with numpy (``DCDFile`` loops in Python, which
costs tens of milliseconds per frame for 10^5 atoms), and :func:`truncate_dcd` cuts a file back to the
frames at or before a given step so that a resumed run appends without duplicates or gaps.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from spemd.errors import SimulationError
from spemd.files import names_own_file

AKMA_TIME_PS = 0.04888821
HEADER_BYTES = 276
_MAGIC = struct.pack("<i4c", 84, b"C", b"O", b"R", b"D")


def frame_bytes(n_atoms: int, has_box: bool = True) -> int:
    return (56 if has_box else 0) + 3 * (8 + 4 * n_atoms)


def _header(n_atoms, first_step, interval, n_frames, dt_ps, has_box=True) -> bytes:
    last = first_step + max(n_frames - 1, 0) * interval
    header = struct.pack("<i4c9if", 84, b"C", b"O", b"R", b"D", n_frames, first_step, interval, last,
                         0, 0, 0, 0, 0, dt_ps / AKMA_TIME_PS)
    header += struct.pack("<13i", 1 if has_box else 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 84, 164, 2)
    header += struct.pack("<80s", b"Created by spemd (pipeline.dcd)")
    header += struct.pack("<80s", b"Positions in Angstrom, unwrapped (continuous) coordinates")
    header += struct.pack("<4i", 164, 4, n_atoms, 4)
    assert len(header) == HEADER_BYTES
    return header


def read_header(path) -> dict:
    """Atom count, first step, interval, time step (ps) and the number of complete frames on disk."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or head[:8] != _MAGIC:
        raise SimulationError(f"{path}: not a DCD file written by this pipeline (bad header)")
    n_header, first_step, interval, _last = struct.unpack("<4i", head[8:24])
    dt = struct.unpack("<f", head[44:48])[0] * AKMA_TIME_PS
    has_box = struct.unpack("<i", head[48:52])[0] == 1
    n_atoms = struct.unpack("<i", head[268:272])[0]
    size = path.stat().st_size
    n_complete = (size - HEADER_BYTES) // frame_bytes(n_atoms, has_box)
    return {"n_atoms": n_atoms, "first_step": first_step, "interval": interval, "dt_ps": dt,
            "has_box": has_box, "n_frames_header": n_header, "n_frames": int(n_complete)}


def truncate_dcd(path, last_step: int) -> int:
    """Keep only the frames whose step is <= `last_step` (and no partial frame); return how many remain.

    The header's frame count and last-step fields are rewritten to match.
    """
    info = read_header(path)
    keep = 0 if last_step < info["first_step"] else (last_step - info["first_step"]) // info["interval"] + 1
    if keep > info["n_frames"]:
        raise SimulationError(
            f"{path}: holds {info['n_frames']} complete frames but the checkpoint at step {last_step} "
            f"needs {keep}; the trajectory cannot be resumed exactly (delete the stage folder to restart it)"
        )
    size = HEADER_BYTES + keep * frame_bytes(info["n_atoms"], info["has_box"])
    with open(path, "r+b") as fh:
        fh.truncate(size)
        fh.seek(8)
        last = info["first_step"] + max(keep - 1, 0) * info["interval"]
        fh.write(struct.pack("<i", keep))
        fh.seek(20)
        fh.write(struct.pack("<i", last))
        fh.flush()
        os.fsync(fh.fileno())
    return keep


def _lengths_and_angles(box_nm: np.ndarray):
    a, b, c = box_nm
    la, lb, lc = (float(np.linalg.norm(v)) for v in (a, b, c))
    alpha = float(np.arccos(np.dot(b, c) / (lb * lc)))
    beta = float(np.arccos(np.dot(a, c) / (la * lc)))
    gamma = float(np.arccos(np.dot(a, b) / (la * lb)))
    return la, lb, lc, alpha, beta, gamma


class DCDWriter:
    """Append frames to a DCD file. ``append=True`` continues an existing file (truncate it first)."""

    def __init__(self, path, n_atoms: int, dt_ps: float, first_step: int, interval: int, append: bool = False):
        self.path = Path(path)
        self.n_atoms = int(n_atoms)
        self.first_step = int(first_step)
        self.interval = int(interval)
        if append:
            info = read_header(self.path)
            if (info["n_atoms"], info["first_step"], info["interval"]) != (self.n_atoms, self.first_step, self.interval):
                raise SimulationError(
                    f"{self.path}: existing trajectory has atoms/first step/interval "
                    f"{info['n_atoms']}/{info['first_step']}/{info['interval']}, this run "
                    f"{self.n_atoms}/{self.first_step}/{self.interval}; delete the stage folder to restart it"
                )
            self.n_frames = info["n_frames"]
            self._fh = open(self.path, "r+b")
            self._fh.truncate(HEADER_BYTES + self.n_frames * frame_bytes(self.n_atoms))
        else:
            self.n_frames = 0
            self._fh = open(self.path, "wb")
            self._fh.write(_header(self.n_atoms, self.first_step, self.interval, 0, dt_ps))
        self._fh.seek(0, os.SEEK_END)
        self._marker = struct.pack("<i", 4 * self.n_atoms)

    @names_own_file
    def write(self, positions_nm: np.ndarray, box_vectors_nm: np.ndarray) -> None:
        pos = np.asarray(positions_nm, dtype=np.float64)
        if pos.shape != (self.n_atoms, 3):
            raise ValueError(f"expected positions of shape ({self.n_atoms}, 3), got {pos.shape}")
        la, lb, lc, alpha, beta, gamma = _lengths_and_angles(np.asarray(box_vectors_nm, dtype=np.float64))
        fh = self._fh
        fh.write(struct.pack("<i6di", 48, 10 * la, np.cos(gamma), 10 * lb, np.cos(beta), np.cos(alpha), 10 * lc, 48))
        xyz = (10.0 * pos).astype("<f4").T
        for k in range(3):
            fh.write(self._marker)
            fh.write(np.ascontiguousarray(xyz[k]).tobytes())
            fh.write(self._marker)
        self.n_frames += 1
        end = fh.tell()
        fh.seek(8)
        fh.write(struct.pack("<i", self.n_frames))
        fh.seek(20)
        fh.write(struct.pack("<i", self.first_step + (self.n_frames - 1) * self.interval))
        fh.seek(end)

    @names_own_file
    def flush(self, sync: bool = False) -> None:
        self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
