"""Probe a GPU platform on the run's own System in a child process, so that a crash cannot kill the caller.

A driver or OpenCL runtime that creates a Context fine may still crash or compute wrong numbers later:
Debian's POCL 3.1 segfaults in the kernel ``getScale`` of OpenMM's minimiser while its MD steps work.
:func:`probe_platform` therefore runs, in a fresh Python process (``python -m spemd.pipeline.probe``),
on the System of ``params/system.xml`` and the given positions:

1. ``energy``: energy and forces on the candidate and on a reference platform (CPU, else Reference);
   the candidate passes if ``|E - E_ref| <= ENERGY_REL_TOL * max(|E_ref|, N kJ/mol)`` and
   ``max_i |F_i - F_ref,i| / rms_i |F_ref,i| <= FORCE_REL_TOL`` (N atoms; the force error is measured
   against the RMS force because single-precision errors scale with the typical force, not with the
   smallest one);
2. ``md``: ``PROBE_MD_STEPS`` Langevin steps of ``PROBE_DT_FS``, ending with finite energy and positions;
3. ``minimise``: ``PROBE_MIN_ITERATIONS`` iterations of ``LocalEnergyMinimizer``.

Which of these run is the caller's choice (``operations``): ``auto`` asks for all three, so that it never
picks a platform that fails any step of the run; a platform named in the config is probed only on what
the step at hand does (the minimiser for ``spemd minimise``, MD steps for ``spemd md``).

A child killed by a signal, still running after ``SPEMD_PROBE_TIMEOUT_S`` seconds (default
:data:`PROBE_TIMEOUT_S`, kernel compilation included), or disagreeing fails the probe; the reason names
the step it was in. Results, passed or failed, are cached as JSON under
``$SPEMD_CACHE_DIR/platform-probe`` (default ``$XDG_CACHE_HOME/spemd``, else ``~/.cache/spemd``), keyed by
host name, OpenMM version, platform, its Context properties and the SHA-256 of ``system.xml``, so the
jobs of one run pay for the probe once per machine.

Test hook: ``SPEMD_PROBE_FAULT=<platform>=<segv|hang|wrong>`` makes the child, on that platform, kill
itself with SIGSEGV in the minimiser, hang while creating the Context, or scale its forces by 1.1 (a crash that
no longer happens in a fixed POCL stays testable).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

from spemd.errors import ConfigError
from spemd.files import write_json_atomic

ENERGY_REL_TOL = 1e-4
FORCE_REL_TOL = 5e-3
PROBE_MIN_ITERATIONS = 5
PROBE_MD_STEPS = 10
PROBE_DT_FS = 1.0
PROBE_TIMEOUT_S = 600.0
CACHE_VERSION = 1
OPERATIONS = ("energy", "md", "minimise")
_STEP_NAMES = {"context": "creating the Context", "energy": "the energy/force comparison",
               "minimise": "the minimiser", "md": "the MD steps"}


def probe_timeout() -> float:
    value = os.environ.get("SPEMD_PROBE_TIMEOUT_S", "").strip()
    if not value:
        return PROBE_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"SPEMD_PROBE_TIMEOUT_S: {value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ConfigError(f"SPEMD_PROBE_TIMEOUT_S: {value!r} is out of range; must be > 0")
    return seconds


def cache_dir() -> Path:
    root = os.environ.get("SPEMD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "spemd")
    return Path(root) / "platform-probe"


def cache_key(system_sha256: str, name: str, props: dict[str, str], operations) -> str:
    blob = json.dumps([CACHE_VERSION, socket.gethostname(), openmm.__version__, name, props, system_sha256,
                       sorted(operations)],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _reference_name() -> str:
    names = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    return "CPU" if "CPU" in names else "Reference"


def probe_platform(name: str, props: dict[str, str], system_xml: Path, positions_nm, box_nm,
                   reference_props: dict[str, str] | None = None, operations=OPERATIONS) -> dict:
    """Probe platform `name` (Context properties `props`) on system.xml at `positions_nm` / `box_nm`.

    `operations`: which of :data:`OPERATIONS` to try (always including ``energy``).

    Returns a record: ``passed``, ``reason`` (one line, None when passed), ``seconds``, ``cached``,
    ``energy_rel_err``, ``force_max_rel_err``, ``reference``. Never raises for a failing candidate.
    """
    system_xml = Path(system_xml)
    digest = hashlib.sha256(system_xml.read_bytes()).hexdigest()
    operations = ["energy"] + [op for op in OPERATIONS[1:] if op in operations]
    cached_path = cache_dir() / f"{cache_key(digest, name, props, operations)}.json"
    fault = os.environ.get("SPEMD_PROBE_FAULT", "")
    if not fault and cached_path.is_file():
        try:
            record = json.loads(cached_path.read_text())
            return {**record, "cached": True, "cache_file": str(cached_path)}
        except (OSError, ValueError):
            pass  # an unreadable cache entry: probe again and overwrite it
    record = _run_child(name, props, system_xml, positions_nm, box_nm, reference_props or {}, operations)
    record["system_sha256"] = digest
    if not fault:  # a simulated fault is not this machine's result
        try:
            write_json_atomic(cached_path, record)
        except OSError:
            pass  # no writable cache: the next job probes again
    return {**record, "cached": False, "cache_file": str(cached_path)}


def _nm(values) -> np.ndarray:
    """An (n, 3) array in nm from a Quantity, a list of Vec3 Quantities or plain numbers (nm)."""
    if unit.is_quantity(values):
        values = values.value_in_unit(unit.nanometer)
    return np.array([v.value_in_unit(unit.nanometer) if unit.is_quantity(v) else v for v in values], dtype=float)


def _run_child(name, props, system_xml, positions_nm, box_nm, reference_props, operations) -> dict:
    timeout = probe_timeout()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spemd-probe-") as tmp:
        pos_path = Path(tmp) / "positions.npy"
        np.save(pos_path, _nm(positions_nm))
        spec = {"platform": name, "props": props, "system_xml": str(system_xml), "positions_npy": str(pos_path),
                "box_nm": _nm(box_nm).tolist(), "reference": _reference_name(),
                "reference_props": reference_props, "operations": operations}
        out_path = Path(tmp) / "stdout.txt"
        with open(out_path, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "spemd.pipeline.probe", json.dumps(spec)],
                                    stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = None
        lines = out_path.read_text().splitlines()
    seconds = time.perf_counter() - t0
    steps = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("step ")]
    where = _STEP_NAMES.get(steps[-1], steps[-1]) if steps else "start-up"
    results = [json.loads(ln.split(" ", 1)[1]) for ln in lines if ln.startswith("result ")]
    record = {"platform": name, "props": props, "operations": operations, "passed": False, "reason": None, "seconds": round(seconds, 2),
              "reference": None, "energy_rel_err": None, "force_max_rel_err": None}
    if results:
        record.update(results[-1])
    if rc is None:
        record["reason"] = f"hung: still running after {timeout:g} s, in {where}"
    elif rc < 0:
        sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        record["reason"] = f"crashed with {sig} in {where}"
    elif rc != 0 or not results:
        errors = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("error ")]
        record["reason"] = f"{errors[-1] if errors else f'probe exited with status {rc}'} in {where}"
    record["passed"] = record["reason"] is None
    return record


# ------------------------------------------------------------------------------------------ the child


def _say(kind: str, text: str) -> None:
    print(f"{kind} {text}", flush=True)


def _energy_forces(context):
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def compare(e, f, e_ref, f_ref) -> tuple[float, float]:
    """(energy error relative to max(|E_ref|, N kJ/mol), max force error relative to the RMS force)."""
    n = len(f_ref)
    e_err = abs(e - e_ref) / max(abs(e_ref), float(n))
    rms = float(np.sqrt(np.mean(np.sum(f_ref**2, axis=1))))
    f_err = float(np.max(np.linalg.norm(f - f_ref, axis=1))) / max(rms, 1e-12)
    return e_err, f_err


def _child(spec: dict) -> int:
    name = spec["platform"]
    fault_platform, _, fault = os.environ.get("SPEMD_PROBE_FAULT", "").partition("=")
    fault = fault if fault_platform == name else ""
    system_xml = Path(spec["system_xml"])
    system = openmm.XmlSerializer.deserialize(system_xml.read_text())
    positions = np.load(spec["positions_npy"]) * unit.nanometer
    box = [openmm.Vec3(*row) for row in spec["box_nm"]] * unit.nanometer

    def context(platform_name, props):
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond,
                                                     PROBE_DT_FS * unit.femtosecond)
        integrator.setRandomNumberSeed(1)
        ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform_name), props)
        ctx.setPeriodicBoxVectors(*box)
        ctx.setPositions(positions)
        return ctx, integrator

    _say("step", "context")
    while fault == "hang":
        time.sleep(60)
    ref, _ref_int = context(spec["reference"], spec["reference_props"])
    ctx, integrator = context(name, spec["props"])
    _say("step", "energy")
    e_ref, f_ref = _energy_forces(ref)
    e, f = _energy_forces(ctx)
    if fault == "wrong":
        e, f = 1.1 * e, 1.1 * f
    e_err, f_err = compare(e, f, e_ref, f_ref)
    result = {"reference": spec["reference"], "energy_rel_err": e_err, "force_max_rel_err": f_err}
    if not (e_err <= ENERGY_REL_TOL and f_err <= FORCE_REL_TOL):  # NaN fails too
        result["reason"] = (f"disagrees with {spec['reference']}: energy error {e_err:.2g} (tolerance {ENERGY_REL_TOL:g}), "
                            f"max force error {f_err:.2g} of the RMS force (tolerance {FORCE_REL_TOL:g})")
        _say("result", json.dumps(result))
        return 0
    _say("result", json.dumps(result))  # the comparison is kept even if a later step crashes
    if "md" in spec["operations"]:
        _say("step", "md")
        ctx.setVelocitiesToTemperature(300 * unit.kelvin, 1)
        integrator.step(PROBE_MD_STEPS)
        state = ctx.getState(getEnergy=True, getPositions=True)
        e_md = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if not (np.isfinite(e_md) and np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all()):
            result["reason"] = f"non-finite energy or positions after {PROBE_MD_STEPS} MD steps"
            _say("result", json.dumps(result))
            return 0
    if "minimise" in spec["operations"]:
        _say("step", "minimise")
        if fault == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        ctx.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, PROBE_MIN_ITERATIONS)
    _say("step", "done")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _child(json.loads(argv[0]))
    except Exception as exc:  # OpenMMException from the candidate: a failed probe, reported in one line
        text = str(exc).strip().splitlines()
        _say("error", f"{type(exc).__name__}: {text[0] if text else ''}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
