"""Atomic writes: an output either exists complete or not at all.

Everything is written to a temporary name in the destination folder, then renamed (``os.replace`` is
atomic on POSIX within one filesystem), so a killed job never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            if exc.filename is None:  # a failed write (e.g. a full disk) names no file: name the one written
                raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(path)) from None
            raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_writable(folder) -> None:
    """OSError naming `folder` (or its nearest existing parent) if a file cannot be created there.

    Tries for real (a temporary file, removed at once): permission bits say nothing for root, nor on a
    read-only mount."""
    folder = Path(folder).absolute()
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=".spemd-write-test.", dir=probe)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(probe)) from None
    os.close(fd)
    os.unlink(tmp)


def names_own_file(method):
    """Decorator for a writer's methods: an OSError that names no file (a failed write, e.g. a full disk)
    gets the writer's ``self.path``, so the CLI's one line says which file could not be written."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(self.path)) from None
            raise

    return wrapper


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json_atomic(path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    # numpy scalars and arrays, Paths
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
