"""One table of all runs: a row per system/temperature/replica plus replica-combined rows.

Reads transport.json files written by analysis.production. System and replica come from the JSON
("system", "replica") or, when absent, from the path ``results/{system}/rep{replica}/{T}K/...``.
Combined rows (replica = "combined") use analysis.msd.combine_estimates on each (value, uncertainty)
column: inverse-variance weighted mean, sigma scaled by the Birge ratio when replicas scatter more
than their error bars. Columns carry units in their names. A null first-shell radius (and CN) comes
with its reason (``*_shell_why_null``); ``D_*_flag`` is the MSD fit's beta flag ("cage offset",
"sub-diffusive", ...; analysis.msd).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np

from spemd.errors import InputError
from spemd.files import write_text_atomic

from spemd.analysis.msd import combine_estimates

#: (column, uncertainty column or None, getter path in transport.json)
COLUMNS = (
    ("D_Na_cm2_per_s", "D_Na_sigma_cm2_per_s", ("diffusion", "Na", "D_cm2_per_s"), ("diffusion", "Na", "D_sigma_cm2_per_s")),
    ("beta_Na", None, ("diffusion", "Na", "beta"), None),
    ("D_TFSI_cm2_per_s", "D_TFSI_sigma_cm2_per_s", ("diffusion", "TFSI", "D_cm2_per_s"),
     ("diffusion", "TFSI", "D_sigma_cm2_per_s")),
    ("beta_TFSI", None, ("diffusion", "TFSI", "beta"), None),
    ("sigma_NE_S_per_cm", "sigma_NE_err_S_per_cm", ("conductivity", "sigma_NE_S_per_cm"),
     ("conductivity", "sigma_NE_err_S_per_cm")),
    ("sigma_EH_S_per_cm", "sigma_EH_err_S_per_cm", ("conductivity", "sigma_EH_S_per_cm"),
     ("conductivity", "sigma_EH_err_S_per_cm")),
    ("t_plus_ideal", "t_plus_ideal_err", ("conductivity", "t_plus_ideal"), ("conductivity", "t_plus_ideal_err")),
    ("t_plus_collective", "t_plus_collective_err", ("conductivity", "t_plus_collective"),
     ("conductivity", "t_plus_collective_err")),
    ("haven_ratio", "haven_ratio_err", ("conductivity", "haven_ratio"), ("conductivity", "haven_ratio_err")),
    ("free_Na_fraction", "free_Na_fraction_sem", ("pairing", "free_fraction"), ("pairing", "free_fraction_sem")),
    ("NaO_TFSI_first_shell_A", None, ("rdf", "Na-O_TFSI", "first_shell_radius_A"), None),
    ("NaO_TFSI_first_shell_CN", "NaO_TFSI_first_shell_CN_sem", ("rdf", "Na-O_TFSI", "first_shell_cn"),
     ("rdf", "Na-O_TFSI", "first_shell_cn_sem")),
    ("NaO_ether_first_shell_A", None, ("rdf", "Na-O_ether", "first_shell_radius_A"), None),
)
#: (column, path in transport.json) of text columns: why a shell is null, what the D fit flagged
TEXT_COLUMNS = (
    ("NaO_TFSI_shell_why_null", ("rdf", "Na-O_TFSI", "first_shell_reason")),
    ("NaO_ether_shell_why_null", ("rdf", "Na-O_ether", "first_shell_reason")),
    ("NaO_TFSI_shell_source", ("rdf", "Na-O_TFSI", "first_shell_source")),
    ("D_Na_flag", ("diffusion", "Na", "beta_flag")),
    ("D_TFSI_flag", ("diffusion", "TFSI", "beta_flag")),
)


def _get(d, path):
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return float("nan")
        d = d[k]
    try:
        return float(d)
    except (TypeError, ValueError):
        return float("nan")


def _identity(data, path: Path):
    system, replica = data.get("system"), data.get("replica")
    parts = path.resolve().parts
    for i, p in enumerate(parts):
        m = re.fullmatch(r"rep(\d+)", p)
        if m and i > 0:
            system = system if system is not None else parts[i - 1]
            replica = replica if replica is not None else int(m.group(1))
    return (system if system is not None else path.parent.name), replica


def _text(d, path) -> str:
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return ""
        d = d[k]
    return str(d)


def read_transport(path: Path) -> dict:
    """One run's transport.json, checked to be analysis.production's output."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"transport json {path}: cannot be read ({type(exc).__name__})") from None
    if "temperature_K" not in data:
        raise InputError(f"transport json {path}: no temperature_K; not a transport.json of analysis.production")
    return data


def summarise(transport_jsons, out_csv) -> None:
    """Write the summary CSV (module docstring) for the given transport.json paths."""
    rows = []
    for p in transport_jsons:
        p = Path(p)
        data = read_transport(p)
        system, replica = _identity(data, p)
        row = {"system": system, "temperature_K": float(data["temperature_K"]), "replica": replica}
        for col, ecol, path, epath in COLUMNS:
            row[col] = _get(data, path)
            if ecol:
                row[ecol] = _get(data, epath)
        for col, path in TEXT_COLUMNS:
            row[col] = _text(data, path)
        rows.append(row)
    rows.sort(key=lambda r: (str(r["system"]), r["temperature_K"], str(r["replica"])))
    combined = []
    keys = sorted({(r["system"], r["temperature_K"]) for r in rows}, key=lambda k: (str(k[0]), k[1]))
    for system, T in keys:
        group = [r for r in rows if r["system"] == system and r["temperature_K"] == T]
        row = {"system": system, "temperature_K": T, "replica": f"combined (n={len(group)})"}
        for col, ecol, _, _ in COLUMNS:
            vals = [r[col] for r in group]
            if ecol:
                c = combine_estimates(vals, [r[ecol] for r in group])
                row[col], row[ecol] = c["mean"], c["sigma"]
            else:
                finite = [v for v in vals if np.isfinite(v)]
                row[col] = float(np.mean(finite)) if finite else float("nan")
        for col, _ in TEXT_COLUMNS:
            row[col] = "; ".join(sorted({f"rep{r['replica']}: {r[col]}" for r in group if r[col]}))
        combined.append(row)
    header = ["system", "temperature_K", "replica"]
    for col, ecol, _, _ in COLUMNS:
        header += [col] + ([ecol] if ecol else [])
    header += [col for col, _ in TEXT_COLUMNS]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    for r in rows + combined:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text_atomic(out_csv, buf.getvalue())
