"""One line on stderr when a stage's process dies by a signal (SIGSEGV, SIGBUS, SIGILL, SIGKILL...).

A segfault inside a platform's kernels cannot be caught in-process, and its own message ("Segmentation
fault", from the shell) names neither stage, platform nor step. :class:`CrashWatch` starts a small
watcher process (plain Python, no imports of the project) that holds the reading end of a pipe; the
stage writes to it where it is (``at(...)``), each checkpoint it completes (``checkpointed(step)``) and,
when it ends by any Python path (return, exception, ``sys.exit``), ``ok``. A pipe that closes without
``ok`` means the process was killed; the watcher then writes::

    stage production: killed by SIGSEGV on OpenCL device 0 (...) at steps 1000-1050 of 2500; last checkpoint (step 1000) kept in .../checkpoint.chk, rerun to resume from it

The signal's name comes from :mod:`faulthandler`, which the watch points at a temporary file while it
is active (its traceback is not shown). A SIGKILL leaves no such record and is reported as "killed by
a signal that leaves no trace (SIGKILL, e.g. out of memory)". Checkpoints are written under temporary
names and renamed (:mod:`spemd.pipeline.engine`), so the last one is complete whenever the process dies.
The watcher ignores stop signals, so that a process-group SIGTERM lets it report; it exits when the
pipe closes.
"""

from __future__ import annotations

import atexit
import faulthandler
import os
import subprocess
import sys
import tempfile

_WATCHER = r"""
import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
    signal.signal(s, signal.SIG_IGN)
what, platform, ckpt, fault_path = sys.argv[1:5]
where, step, ok = "", None, False
for line in sys.stdin:
    kind, _, rest = line.rstrip("\n").partition(" ")
    if kind == "at":
        where = rest
    elif kind == "ckpt":
        step = rest
    elif kind == "ok":
        ok = True
if not ok:
    try:
        with open(fault_path) as fh:
            text = fh.read()
    except OSError:
        text = ""
    names = {"Segmentation fault": "SIGSEGV", "Bus error": "SIGBUS", "Illegal instruction": "SIGILL",
             "Floating-point exception": "SIGFPE", "Aborted": "SIGABRT"}
    sig = next((v for k, v in names.items() if k in text), None)
    how = f"killed by {sig}" if sig else "killed by a signal that leaves no trace (SIGKILL, e.g. out of memory)"
    if step is not None:
        kept = f"last checkpoint (step {step}) kept in {ckpt}, rerun to resume from it"
    elif ckpt != "-":
        kept = f"no checkpoint written by this run ({ckpt} is unchanged); rerun to continue"
    else:
        kept = "nothing was written; rerun to redo it"
    sys.stderr.write(f"{what}: {how} on {platform}{' ' + where if where else ''}; {kept}\n")
    sys.stderr.flush()
try:
    os.unlink(fault_path)
except OSError:
    pass
"""


class CrashWatch:
    """Watch this process for death by a signal while a stage runs (module docstring).

    `what`: "stage production" / "minimise"; `platform`: the platform description; `checkpoint`: the
    checkpoint path of the stage, or None. Always end it with :meth:`close` (also done at exit).
    """

    def __init__(self, what: str, platform: str, checkpoint=None):
        fd, self._fault_path = tempfile.mkstemp(prefix="spemd-fault-", suffix=".txt")
        self._fault_file = os.fdopen(fd, "w")
        self._had_faulthandler = faulthandler.is_enabled()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _WATCHER, what, platform, str(checkpoint or "-"), self._fault_path],
                stdin=subprocess.PIPE, text=True, bufsize=1,
            )
        except OSError:  # no watcher: the stage runs unwatched, as before
            self._proc = None
            self._fault_file.close()
            os.unlink(self._fault_path)
            return
        faulthandler.enable(file=self._fault_file, all_threads=False)
        atexit.register(self.close)

    def _send(self, line: str) -> None:
        if self._proc is None:
            return
        try:
            self._proc.stdin.write(line + "\n")
        except (BrokenPipeError, ValueError):  # the watcher is gone: nothing to report to
            self._proc = None

    def at(self, where: str) -> None:
        """Where the stage is now, e.g. 'at steps 1000-1050 of 2500' or 'in the minimiser'."""
        self._send(f"at {where}")

    def checkpointed(self, step: int) -> None:
        self._send(f"ckpt {int(step)}")

    def close(self) -> None:
        """The stage ended by a Python path: tell the watcher, and restore faulthandler."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        atexit.unregister(self.close)
        try:
            proc.stdin.write("ok\n")
            proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        proc.wait()
        if self._had_faulthandler:
            faulthandler.enable(file=sys.__stderr__, all_threads=True)
        else:
            faulthandler.disable()
        self._fault_file.close()
