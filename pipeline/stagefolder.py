"""One owner per stage folder, and a stage bound to the inputs it was simulated from.

Ownership
---------
A running ``spemd minimise`` or ``spemd md`` holds an exclusive ``fcntl.flock`` on ``<stage>/spemd.lock``
(the file holds "PID host" of the holder). A second process on the same folder stops at once with one
line naming that PID and host, before it reads or writes anything else in the folder. The kernel drops
the lock when its process dies, even by SIGKILL, so no stale lock is left behind; the file itself stays.
Over NFS, Linux maps ``flock`` onto the server's byte-range locks, so two hosts exclude each other too.

Inputs
------
A stage is the product of three inputs, each recorded as a SHA-256 in its checkpoint record
(``checkpoint.json``) and in ``done.json`` under ``"inputs"``:

- ``system_xml``: the serialized ``openmm.System`` (force field, charge scale, HMR ...);
- ``start_state``: the state it starts from (the previous stage's ``state.xml``, the minimised one, or
  ``topology.pdb`` for minimisation);
- ``config``: the config the stage is run with (its stage entry, protocol, temperature, seed), as
  canonical JSON.

A folder whose record differs in any of them is set aside as ``<stage>.replaced`` (not deleted) and the
stage starts afresh; the set-aside folder is removed once the new run has written its ``done.json``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path

from spemd.errors import SimulationError
from spemd.provenance import sha256_file

log = logging.getLogger(__name__)

LOCK_NAME = "spemd.lock"
REPLACED_SUFFIX = ".replaced"
#: what each input hash means, for the one log line that says which changed
INPUT_LABELS = {"system_xml": "system.xml (force field)", "start_state": "start state", "config": "stage config"}


class StageLocked(SimulationError):
    """Another live process holds the stage folder."""


def config_hash(config: dict) -> str:
    """SHA-256 of a config section as canonical JSON (sorted keys, so key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def input_hashes(system_xml: Path, start_sha256: str, config: dict) -> dict:
    return {"system_xml": sha256_file(system_xml), "start_state": start_sha256, "config": config_hash(config)}


def changed_inputs(recorded: dict | None, current: dict) -> list[str]:
    """Labels of the inputs whose hash differs from the record (all of them for a record without hashes)."""
    recorded = recorded or {}
    return [INPUT_LABELS[k] for k in INPUT_LABELS if recorded.get(k) != current.get(k)]


def replaced_path(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + REPLACED_SUFFIX)


class StageFolder:
    """Context manager: the exclusive owner of one stage folder (created if missing)."""

    def __init__(self, out_dir):
        self.dir = Path(out_dir)
        self._fd = None

    def __enter__(self):
        self._fd = self._lock(self.dir)
        return self

    def __exit__(self, *exc):
        self._unlock()
        return False

    @staticmethod
    def _lock(folder: Path) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = os.pread(fd, 256, 0).decode(errors="replace").split()
            os.close(fd)
            pid, host = (holder + ["?", "?"])[:2]
            raise StageLocked(
                f"{folder}: in use by another spemd process (PID {pid} on host {host}, lock {path}); "
                "nothing was changed - wait for it to finish or stop it, then rerun"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        return fd

    def _unlock(self):
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def set_aside(self, why: str) -> None:
        """Keep the folder's current contents as <stage>.replaced and continue in a fresh, locked folder.

        At most one set-aside folder is kept: a finished earlier run is preferred over a partial one.
        """
        old = replaced_path(self.dir)
        if old.exists() and not (self.dir / "done.json").is_file():
            shutil.rmtree(self.dir)  # a partial run of inputs that were themselves replaced: keep the finished one
            log.info("%s: %s; starting afresh (the finished earlier run stays in %s)", self.dir, why, old)
        else:
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.dir, old)
            log.info("%s: %s; starting afresh (the old run is kept in %s until this one finishes)", self.dir, why, old)
        held = self._fd  # on the lock file that moved with the old folder: hold it until the new one is ours
        self._fd = self._lock(self.dir)
        os.close(held)

    def finished_record(self, inputs: dict, what: str) -> dict | None:
        """The folder's done.json if it was written from these `inputs` (the stage needs no rerun); else
        None, with a done.json of other inputs set aside first. A done.json without an inputs record
        (written before they existed) counts as matching."""
        done_path = self.dir / "done.json"
        if not done_path.is_file():
            return None
        done = json.loads(done_path.read_text())
        changed = changed_inputs(done.get("inputs"), inputs) if "inputs" in done else []
        if not changed:
            log.info("%s: %s exists; nothing to do", what, done_path)
            return done
        self.set_aside(f"{what}: {', '.join(changed)} changed since {done_path} was written")
        return None

    def finish(self) -> None:
        """The new run has its done.json: the set-aside folder is no longer needed."""
        old = replaced_path(self.dir)
        if old.exists():
            shutil.rmtree(old)
