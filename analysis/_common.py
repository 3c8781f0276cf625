"""Shared helpers of the analysis package: loading, selections, time axis, unwrapping, fitting.

MDAnalysis works in Angstrom and ps; this package works in nm and ps. Coordinates cross the boundary
only through :mod:`spemd.units` (``angstrom_to_nm``/``nm_to_angstrom``).

Unwrapping (used by MSD and conductivity): positions of a wrapped trajectory are made continuous by
accumulating frame-to-frame minimum-image displacements,

    x_unwrapped(t_k) = x(t_0) + sum_{j=1..k} mic(x(t_j) - x(t_{j-1}))

which is exact as long as no particle moves more than half the shortest box edge between two
consecutive frames (for a triclinic box: half the shortest perpendicular width). Positions of an
already unwrapped trajectory pass through unchanged under the same condition.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from spemd.errors import InputError
from spemd.units import angstrom_to_nm

#: Relative tolerance on frame spacing: frames are "equally spaced" when every interval is within it.
TIME_SPACING_RTOL = 1e-4


def dcd_not_a_dcd(path) -> str | None:
    """One line if `path` is empty or does not start like a DCD (84-byte record + "CORD", either byte order)."""
    import struct

    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        return f"trajectory {os.fspath(path)}: empty file; expected a DCD trajectory"
    if head in (struct.pack("<i", 84) + b"CORD", struct.pack(">i", 84) + b"CORD"):
        return None
    what = " (it is gzip-compressed: gunzip it first)" if head[:2] == b"\x1f\x8b" else ""
    return f"trajectory {os.fspath(path)}: not a DCD file{what}; expected a CHARMM/OpenMM DCD trajectory"


def dcd_truncation(path) -> str | None:
    """One line naming the frames if a (little-endian CHARMM/OpenMM) DCD is cut short, else None."""
    import struct

    path = os.fspath(path)
    with open(path, "rb") as fh:
        head = fh.read(96)
        if len(head) < 96 or head[:8] != struct.pack("<i", 84) + b"CORD":
            return None  # another layout: left to the reader
        title_len = struct.unpack("<i", head[92:96])[0]
        header = 92 + 8 + title_len + 12  # 84-byte control record, title record, atom-count record
        head += fh.read(header - 96)
    if len(head) < header:
        return f"{path}: truncated inside the header"
    n_header = struct.unpack("<i", head[8:12])[0]
    has_box, four_dims = (struct.unpack("<i", head[i:i + 4])[0] == 1 for i in (48, 52))
    n_atoms = struct.unpack("<i", head[header - 8:header - 4])[0]
    frame = (56 if has_box else 0) + (4 if four_dims else 3) * (8 + 4 * n_atoms)
    complete, partial = divmod(os.path.getsize(path) - header, frame)
    if partial == 0 and n_header in (0, complete):
        return None
    text = f"{path}: truncated: {complete} complete frames on disk"
    if partial:
        text += f", frame {complete + 1} cut off after {partial} of {frame} bytes"
    if n_header > complete:
        text += f"; the header says {n_header} frames (frames {complete + 1}-{n_header} are missing)"
    return text + f"; only the {complete} complete frames are analysed"


def load_universe(topology, trajectory=None, dt_ps=None):
    """An MDAnalysis Universe from topology (+ trajectory); unreadable inputs raise InputError.

    `dt_ps` overrides the frame interval of the trajectory (for formats that carry none).
    """
    import MDAnalysis as mda

    for label, path in (("topology", topology), ("trajectory", trajectory)):
        if path is not None and not os.path.exists(path):
            raise InputError(f"{label} {os.fspath(path)}: file does not exist")
    if trajectory is not None and os.fspath(trajectory).lower().endswith(".dcd"):
        not_dcd = dcd_not_a_dcd(trajectory)
        if not_dcd:  # refused here: MDAnalysis' half-built reader prints a traceback when it is collected
            raise InputError(not_dcd)
        problem = dcd_truncation(trajectory)
        if problem:  # MDAnalysis reads such a file silently, with fewer frames
            warnings.warn(problem, stacklevel=2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if trajectory is None:
                return mda.Universe(os.fspath(topology))
            kw = {} if dt_ps is None else {"dt": float(dt_ps)}
            return mda.Universe(os.fspath(topology), os.fspath(trajectory), **kw)
    except (ValueError, OSError, EOFError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"trajectory {os.fspath(trajectory)}: cannot be read with topology {os.fspath(topology)} ({first})"
        ) from None


def select(universe, selection: str, label: str = "selection"):
    """``universe.select_atoms(selection)``; empty or invalid selections raise InputError naming it."""
    try:
        group = universe.select_atoms(selection)
    except Exception as exc:  # MDAnalysis raises SelectionError/ValueError with multi-line text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{label} {selection!r}: invalid selection ({first})") from None
    if len(group) == 0:
        raise InputError(f"{label} {selection!r}: matches no atoms (n_atoms={universe.atoms.n_atoms})")
    return group


def check_atomgroup(group, label: str):
    if group is None or len(group) == 0:
        raise InputError(f"{label}: empty atom group; give a selection that matches at least one atom")
    return group


def frame_spacing_ps(times, label: str = "trajectory") -> float:
    """The common frame interval (ps) of `times`; unequal spacing raises InputError."""
    times = np.asarray(times, dtype=float)
    if times.size < 2:
        raise InputError(f"{label}: {times.size} frame(s); at least 2 frames are needed for a time axis")
    dts = np.diff(times)
    dt = float(np.median(dts))
    if not dt > 0:
        raise InputError(f"{label}: frame times do not increase (median interval {dt} ps)")
    if np.any(np.abs(dts - dt) > TIME_SPACING_RTOL * abs(dt)):
        raise InputError(
            f"{label}: frame times are not equally spaced (intervals {dts.min():g} to {dts.max():g} ps); "
            "analyse equally spaced frames only"
        )
    return dt


def box_nm(dimensions) -> np.ndarray:
    """``[a, b, c, alpha, beta, gamma]`` with lengths in nm (angles unchanged)."""
    dims = np.asarray(dimensions, dtype=float).copy()
    dims[:3] = angstrom_to_nm(dims[:3])
    return dims


def box_volume_nm3(dimensions) -> float:
    """Volume (nm^3) of an MDAnalysis box ``[a, b, c, alpha, beta, gamma]`` given in Angstrom."""
    from MDAnalysis.lib.mdamath import box_volume

    return float(angstrom_to_nm(1.0) ** 3 * box_volume(np.asarray(dimensions, dtype=np.float64)))


_HALF_WIDTH_CACHE: dict = {}


def half_min_width_nm(dimensions) -> float:
    """Half the shortest perpendicular width of the box (nm): the largest minimum-image-safe radius."""
    key = tuple(np.asarray(dimensions, dtype=np.float64).tolist())
    hit = _HALF_WIDTH_CACHE.get(key)
    if hit is not None:
        return hit
    if len(_HALF_WIDTH_CACHE) > 4096:
        _HALF_WIDTH_CACHE.clear()
    _HALF_WIDTH_CACHE[key] = value = _half_min_width_nm(dimensions)
    return value


def _half_min_width_nm(dimensions) -> float:
    from MDAnalysis.lib.mdamath import triclinic_vectors

    vecs = triclinic_vectors(np.asarray(dimensions, dtype=np.float64))
    vol = abs(np.linalg.det(vecs))
    widths = [vol / np.linalg.norm(np.cross(vecs[(i + 1) % 3], vecs[(i + 2) % 3])) for i in range(3)]
    return float(angstrom_to_nm(0.5 * min(widths)))


def require_box(ts, label: str = "trajectory"):
    dims = ts.dimensions
    if dims is None or not np.all(np.asarray(dims[:3]) > 0):
        raise InputError(f"{label}: frame {ts.frame} has no periodic box; a box is required")
    return dims


def compound_layout(group, compound: str):
    """Sorted atom order and segment starts for per-compound reductions.

    Returns (order, starts, masses) where ``order`` permutes the atoms of `group` so that atoms of
    one compound are contiguous, ``starts`` indexes the first atom of each compound in that order.
    """
    if compound == "atoms":
        return None, None, None
    if compound not in ("residues", "molecules"):
        from spemd.errors import one_of

        raise InputError(one_of("compound", compound, ("atoms", "residues", "molecules")))
    keys = group.resindices if compound == "residues" else group.fragindices
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    masses = np.asarray(group.masses, dtype=np.float64)[order]
    if not np.all(masses > 0):
        masses = np.ones_like(masses)
    return order, starts, masses


def compound_centres(positions, dimensions, layout) -> np.ndarray:
    """Centre of mass of each compound, the compound made whole first (minimum image to its first atom).

    `positions` and `dimensions` in the same length unit. Valid while each compound is smaller than
    half the box.
    """
    from MDAnalysis.lib.distances import minimize_vectors

    order, starts, masses = layout
    pos = np.asarray(positions, dtype=np.float64)[order]
    first = np.repeat(pos[starts], np.diff(np.r_[starts, len(pos)]), axis=0)
    rel = minimize_vectors(pos - first, np.asarray(dimensions, dtype=np.float64))
    wsum = np.add.reduceat(rel * masses[:, None], starts, axis=0)
    msum = np.add.reduceat(masses, starts)
    return pos[starts] + wsum / msum[:, None]


class Unwrapper:
    """Accumulates minimum-image displacements frame by frame (see the module docstring).

    Also records the largest single-frame displacement relative to half the box width, so that a
    violated precondition can be reported.
    """

    def __init__(self):
        self.previous = None
        self.current = None
        self.max_step_fraction = 0.0

    def step(self, wrapped, dimensions) -> np.ndarray:
        from MDAnalysis.lib.distances import minimize_vectors

        wrapped = np.asarray(wrapped, dtype=np.float64)
        if self.previous is None:
            self.current = wrapped.copy()
        else:
            disp = minimize_vectors(wrapped - self.previous, np.asarray(dimensions, dtype=np.float64))
            half = half_min_width_nm(dimensions) / angstrom_to_nm(1.0)  # back to the input unit (A)
            if disp.size:
                self.max_step_fraction = max(self.max_step_fraction, float(np.abs(disp).max() / half))
            self.current = self.current + disp
        self.previous = wrapped
        return self.current


def linear_fit(x, y, sigma=None):
    """Weighted least squares y = a*x + b. Returns (a, b, sigma_a, dof).

    With `sigma` the parameter errors use it as absolute; without, the residual variance scales them.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones_like(x) if sigma is None else 1.0 / np.asarray(sigma, dtype=float) ** 2
    A = np.vstack([x, np.ones_like(x)]).T
    Aw = A * np.sqrt(w)[:, None]
    yw = y * np.sqrt(w)
    coef, *_ = np.linalg.lstsq(Aw, yw, rcond=None)
    dof = len(x) - 2
    cov = np.linalg.pinv(Aw.T @ Aw)
    if sigma is None:
        resid = yw - Aw @ coef
        s2 = float(resid @ resid / dof) if dof > 0 else np.nan
        cov = cov * s2
    return float(coef[0]), float(coef[1]), float(np.sqrt(cov[0, 0])) if np.isfinite(cov[0, 0]) else np.nan, dof


def run_together(analyses, start=None, stop=None, step=None, frames=None):
    """Run several AnalysisBase objects over ONE pass of their common trajectory.

    Equivalent to calling ``a.run(start, stop, step, frames)`` on each, but reads every frame once.
    All analyses must belong to the same Universe.
    """
    analyses = list(analyses)
    if not analyses:
        return analyses
    traj = analyses[0]._trajectory
    for a in analyses[1:]:
        if a._trajectory is not traj:
            raise InputError("run_together: analyses belong to different trajectories; give one Universe")
    for a in analyses:
        a._setup_frames(traj, start=start, stop=stop, step=step, frames=frames)
        a._prepare()
    lead = analyses[0]
    for idx, ts in enumerate(lead._sliced_trajectory):
        for a in analyses:
            a._frame_index = idx
            a._ts = ts
            a.frames[idx] = ts.frame
            a.times[idx] = ts.time
            a._single_frame()
    for a in analyses:
        a._conclude()
    return analyses


def csv_text(header, *columns) -> str:
    """A CSV table (header row, then one row per element of the columns, 8 significant digits)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in zip(*columns):
        w.writerow([f"{x:.8g}" for x in row])
    return buf.getvalue()


def nan_to_none(obj):
    """Recursively replace non-finite floats by None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return nan_to_none(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def check_finite(ts, groups, label: str) -> None:
    """InputError naming the frame and the first atom whose coordinates are NaN or infinite.

    A blown-up or damaged trajectory otherwise gives all-NaN MSDs (reported as "run longer") or a
    scipy traceback; no analysis here can use such a frame."""
    for group in groups:
        pos = group.positions
        bad = ~np.isfinite(pos).all(axis=1)
        if bad.any():
            atom = group[int(np.argmax(bad))]
            raise InputError(
                f"{label}: frame {ts.frame} (t = {ts.time:g} ps) has a non-finite coordinate for atom {atom.index} "
                f"({atom.resname} {atom.resid} {atom.name}): {pos[int(np.argmax(bad))].tolist()}; the trajectory is "
                "damaged or the run blew up - analyse the frames before it (stop) or rerun the stage"
            )


#: nominal charge (e) of each residue of the project's naming contract (docs/contracts.md): an ion
#: selection is checked with these when the topology carries no charges (a PDB does not)
NOMINAL_RESIDUE_CHARGE_E = {"NA": 1.0, "TFS": -1.0, "PEH": 0.0, "PEM": 0.0, "PET": 0.0}


def net_charge_e(group) -> float | None:
    """Net charge (e) of the residues `group` touches: topology charges if any, else the nominal charges of
    NOMINAL_RESIDUE_CHARGE_E; None when neither is known (residues outside the naming contract)."""
    residues = group.residues
    if hasattr(residues.atoms, "charges") and np.any(residues.atoms.charges != 0):
        return float(np.sum(residues.atoms.charges))
    names = [str(r) for r in residues.resnames]
    if not all(n in NOMINAL_RESIDUE_CHARGE_E for n in names):
        return None
    return float(sum(NOMINAL_RESIDUE_CHARGE_E[n] for n in names))


def check_ion_species(cations, anions) -> None:
    """InputError unless the cations carry a positive and the anions a negative net charge."""
    for group, label, sign in ((cations, "cations", 1.0), (anions, "anions", -1.0)):
        q = net_charge_e(group)
        if q is not None and not q * sign > 0:
            raise InputError(
                f"conductivity {label}: net charge {q:+g} e ({len(group.residues)} residues: "
                f"{', '.join(sorted(set(map(str, group.residues.resnames))))}); {label} must carry a "
                f"{'positive' if sign > 0 else 'negative'} net charge (cations e.g. 'resname NA', anions 'resname TFS')"
            )
