"""Human summaries of ``spemd analyse`` results: a few lines on stdout after the JSON is written.

Each formatter reads the result record exactly as written to ``DIR/<kind>.json`` (NaN already turned
into ``None``), with a fallback for every key, so a record from an older or newer analysis version
still gives a summary (a missing number prints as "n/a" rather than failing after the work is done).

    RDF:           first peak (Å), first-shell radius (Å) and coordination number, or why there is none
    MSD:           D ± σ (cm²/s), the MSD's log-log slope β and the fit window (ps), or why there is no D
    conductivity:  σ (Nernst–Einstein and Einstein–Helfand, S/cm), t₊ (ideal and collective), Haven ratio
"""

from __future__ import annotations

import math


def _num(value, fmt: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return "n/a"


def _pm(value, err, fmt: str = ".3g") -> str:
    text = _num(value, fmt)
    return text if text == "n/a" or _num(err, fmt) == "n/a" else f"{text} ± {_num(err, fmt)}"


def _reason(record: dict, *keys: str) -> str | None:
    for key in keys:
        if record.get(key):
            return str(record[key])
    return None


def rdf_lines(record: dict) -> list[str]:
    """First peak, shell radius and CN of an ``rdf.json`` record, or the reason there is no shell."""
    pair = f"{record.get('select', '?')} -> {record.get('select2') or record.get('select', '?')}"
    peaks = record.get("peaks_A") or []
    frames = record.get("n_frames")
    lines = [f"RDF {pair} ({frames if frames is not None else 'n/a'} frames)"]
    lines.append(f"  first peak: {_num(peaks[0], '.2f')} Å" if peaks else "  first peak: none found")
    radius = record.get("first_shell_radius_A")
    if radius is None:
        why = _reason(record, "first_shell_reason", "reason", "no_shell_reason") or "no first minimum after the peak"
        lines.append(f"  first shell: none ({why})")
    else:
        cn = _pm(record.get("first_shell_cn"), record.get("first_shell_cn_err") or record.get("first_shell_cn_sem"))
        lines.append(f"  first shell: radius {_num(radius, '.2f')} Å, coordination number {cn}")
    return lines


def msd_lines(record: dict) -> list[str]:
    """D ± σ with β and the fit window of an ``msd.json`` record, or the reason for refusing a D."""
    n = record.get("n_particles")
    lines = [f"MSD {record.get('select', '?')} ({n if n is not None else 'n/a'} particles)"]
    D = record.get("D_cm2_per_s")
    if D is None:
        why = _reason(record, "no_window_reason", "reason") or "no diffusive fit window"
        lines.append(f"  no D: {why}")
        return lines
    lines.append(f"  D = {_pm(D, record.get('D_sigma_cm2_per_s'))} cm²/s")
    window = record.get("fit_window_ps") or [None, None]
    beta = record.get("beta")
    lines.append(f"  beta = {_num(beta, '.2f')} over {_num(window[0])}-{_num(window[-1])} ps")
    flags = record.get("flags")
    if flags:
        lines.append(f"  flags: {', '.join(map(str, flags)) if isinstance(flags, (list, tuple)) else flags}")
    return lines


def conductivity_lines(record: dict) -> list[str]:
    """σ (Nernst–Einstein, Einstein–Helfand), t₊ and the Haven ratio of a ``conductivity.json`` record."""
    ne = record.get("nernst_einstein") or {}
    eh = record.get("einstein_helfand") or {}
    lines = [f"conductivity {record.get('select', '?')} / {record.get('select2', '?')}"]
    if ne.get("sigma_S_per_cm") is None:
        missing = [name for name, key in (("cations", "D_cation"), ("anions", "D_anion"))
                   if (record.get(key) or {}).get("D_nm2_per_ps") is None]
        why = f"no D for the {' and '.join(missing)}" if missing else "not computed"
        lines.append(f"  sigma_NE: none ({why})")
    else:
        lines.append(f"  sigma_NE = {_pm(ne.get('sigma_S_per_cm'), ne.get('sigma_err_S_per_cm'))} S/cm, "
                     f"t+ (ideal) = {_pm(ne.get('t_plus'), ne.get('t_plus_err'), '.2f')}")
    if eh.get("sigma_EH_S_per_cm") is None:
        why = _reason(eh, "no_window_reason", "reason") or "no diffusive window"
        lines.append(f"  sigma_EH: none ({why})")
    else:
        lines.append(f"  sigma_EH = {_pm(eh.get('sigma_EH_S_per_cm'), eh.get('sigma_EH_err_S_per_cm'))} S/cm, "
                     f"t+ (collective) = {_pm(eh.get('t_plus_collective'), eh.get('t_plus_collective_err'), '.2f')}")
    lines.append(f"  Haven ratio = {_pm(record.get('haven_ratio'), record.get('haven_ratio_err'), '.2f')}")
    return lines


FORMATTERS = {"rdf": rdf_lines, "msd": msd_lines, "conductivity": conductivity_lines}


def summary_text(kind: str, record: dict) -> str:
    """The summary of one ``spemd analyse <kind>`` record, lines joined by newlines."""
    return "\n".join(FORMATTERS[kind](record))
