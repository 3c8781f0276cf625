"""The study's outputs: figures (make_figures), tables (aggregated.csv, comparison.csv, the HTML page),
the list of files run_study writes (expected_outputs, figure_stems) and how the Snakemake report files
them (report_layout).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path

import numpy as np

from spemd.errors import InputError
from spemd.units import BOLTZMANN_EV_PER_K

from spemd.analysis.paper import PAPER_CITATION
from spemd.analysis.study_common import FIGURE_STEMS_ALWAYS, QUANTITIES, TABLES, _finite, _read_csv_columns, pick_systems
from spemd.analysis.study_compare import _arrhenius_points, arrhenius_with_prediction

# --------------------------------------------------------------------------------------- outputs
def expected_outputs(systems_cfg: dict, temperatures_K) -> list[str]:
    """Files (relative to the study folder) that run_study writes for these configured systems/temperatures."""
    meta = {n: {"wt_percent_nominal": float(s.get("mof_wt_percent", 0) or 0),
                "metal": (s.get("mof_metal", "FeNi") if (s.get("mof_wt_percent", 0) or 0) > 0 else None)}
            for n, s in systems_cfg.items()}
    return list(TABLES) + [f"figures/{stem}.{ext}" for stem in figure_stems(meta, temperatures_K) for ext in ("png", "svg")]


#: figure stem prefix -> (caption stem in report/, report subcategory)
_REPORT_FIGURES = {"D_vs_wt": "Transport vs MOF loading", "sigma_vs_wt": "Transport vs MOF loading",
                   "pairing_vs_wt": "Transport vs MOF loading", "arrhenius_D": "Arrhenius",
                   "arrhenius_sigma": "Arrhenius", "rdf_NaO_TFSI_overlay": "Structure and dynamics",
                   "msd_overlay": "Structure and dynamics"}
_REPORT_TABLES = {"comparison.html": "study_comparison", "comparison.csv": "study_comparison",
                  "aggregated.csv": "study_aggregated"}


def report_layout(systems_cfg: dict, temperatures_K) -> list[dict]:
    """Every expected output with how the Snakemake report shows it (rules/report.smk): name, report
    (bool), caption (file stem in report/), subcategory, labels. PNG figures and the tables are shown."""
    out = []
    for name in expected_outputs(systems_cfg, temperatures_K):
        entry = {"name": name, "report": False, "caption": None, "subcategory": None, "labels": None}
        if name in _REPORT_TABLES:
            entry.update(report=True, caption=_REPORT_TABLES[name], subcategory="Comparison with the paper",
                         labels={"file": name})
        elif name.endswith(".png"):
            stem = name[len("figures/"):-len(".png")]
            kind = next(k for k in _REPORT_FIGURES if stem == k or stem.startswith(k + "_"))
            entry.update(report=True, caption=f"study_{kind}", subcategory=_REPORT_FIGURES[kind],
                         labels={"figure": stem})
        out.append(entry)
    return out


def figure_stems(systems_meta: dict, temperatures_K) -> list[str]:
    stems = list(FIGURE_STEMS_ALWAYS)
    temps = sorted({float(t) for t in temperatures_K})
    if len(temps) >= 2:
        stems += ["arrhenius_D", "arrhenius_sigma"]
    pick = pick_systems(systems_meta)
    if pick["plain"] and pick["composite"]:
        for T in temps:
            stems += [f"rdf_NaO_TFSI_overlay_{T:g}K", f"msd_overlay_{T:g}K"]
    return stems


def _curve_mean(runs, filename, xcol, ycols):
    curves = []
    for r in runs:
        path = Path(r["analysis_dir"]) / filename
        if path.is_file():
            curves.append(_read_csv_columns(path))
    if not curves:
        return None
    x = curves[0][xcol]
    out = {xcol: x}
    for c in ycols:
        ys = [np.interp(x, cur[xcol], cur[c]) for cur in curves if xcol in cur and c in cur]
        out[c] = np.mean(ys, axis=0)
    out["n"] = len(curves)
    return out


def make_figures(agg: dict, runs: list[dict], figures_dir) -> list[Path]:
    """Write the study's figures (module docstring); returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spemd.analysis.plots import _save, plot_msd, plot_rdf

    figures_dir = Path(figures_dir)
    systems, points = agg["systems"], agg["points"]
    temps = sorted({T for (_, T) in points})
    paths = []
    markers = {"FeNi": "o", "Fe": "s", "Ni": "^", "Cu": "D", None: "o"}

    def vs_wt(stem, panels, logy):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
        for ax, (q, ylabel) in zip(axes[0], panels):
            for i, T in enumerate(temps):
                color = f"C{i}"
                main = sorted([n for n, m in systems.items() if (n, T) in points and m["metal"] in (None, "FeNi")],
                              key=lambda n: systems[n]["wt_percent"])
                xs = [systems[n]["wt_percent"] for n in main]
                ys = [points[(n, T)][q]["mean"] for n in main]
                es = [points[(n, T)][q]["sigma"] if _finite(points[(n, T)][q]["sigma"]) else 0.0 for n in main]
                ax.errorbar(xs, ys, yerr=es, fmt="o-", color=color, capsize=3, label=f"{T:g} K Fe-Ni")
                for n, m in systems.items():
                    if m["metal"] not in (None, "FeNi") and (n, T) in points:
                        e = points[(n, T)][q]
                        ax.errorbar([m["wt_percent"]], [e["mean"]], yerr=[e["sigma"] if _finite(e["sigma"]) else 0.0],
                                    fmt=markers.get(m["metal"], "x"), color=color, mfc="none", capsize=3,
                                    label=f"{T:g} K {m['metal']}-only")
            if logy and any(points[k][q]["mean"] > 0 for k in points if _finite(points[k][q]["mean"])):
                ax.set_yscale("log")
            ax.set_xlabel("MOF loading (wt%)")
            ax.set_ylabel(ylabel)
        axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.tight_layout()
        return _save(fig, figures_dir / stem)

    paths += vs_wt("D_vs_wt", [("D_Na_cm2_per_s", "D(Na⁺) (cm²/s)"), ("D_TFSI_cm2_per_s", "D(TFSI⁻) (cm²/s)")], True)
    paths += vs_wt("sigma_vs_wt", [("sigma_NE_S_per_cm", "σ Nernst-Einstein (S/cm)"),
                                   ("sigma_EH_S_per_cm", "σ Einstein-Helfand (S/cm)")], True)
    paths += vs_wt("pairing_vs_wt", [("free_Na_fraction", "free Na⁺ fraction"), ("t_plus_ideal", "t⁺ (ideal, NE)"),
                                     ("t_plus_collective", "t⁺ (collective, EH)")], False)

    if len(temps) >= 2:
        for stem, panels in (("arrhenius_D", [("D_Na_cm2_per_s", "D(Na⁺) (cm²/s)"),
                                              ("D_TFSI_cm2_per_s", "D(TFSI⁻) (cm²/s)")]),
                             ("arrhenius_sigma", [("sigma_NE_S_per_cm", "σ NE (S/cm)"),
                                                  ("sigma_EH_S_per_cm", "σ EH (S/cm)")])):
            fig, axes = plt.subplots(2, 1, figsize=(7.5, 7.0), squeeze=False)
            for ax, (q, ylabel) in zip(axes[:, 0], panels):
                for i, n in enumerate(sorted(systems, key=lambda n: (systems[n]["wt_percent"], n))):
                    T, y, s = _arrhenius_points(points, n, q)
                    if len(set(T)) < 2:
                        continue
                    fit = arrhenius_with_prediction(T, y, s)
                    Ta = np.asarray(T)
                    err = [x if _finite(x) else 0.0 for x in s]
                    lab = f"{n}: Ea = {fit['Ea_eV']:.3f} ± {fit['Ea_err_eV']:.3f} eV"
                    ax.errorbar(1000.0 / Ta, y, yerr=err, fmt="o", color=f"C{i}", capsize=3, label=lab)
                    xx = np.linspace(Ta.min(), Ta.max(), 30)
                    ax.plot(1000.0 / xx, np.exp(fit["ln_prefactor"] - fit["Ea_eV"] / (BOLTZMANN_EV_PER_K * xx)),
                            color=f"C{i}", ls="--", lw=0.8)
                ax.set_yscale("log")
                ax.set_xlabel("1000/T (1/K)")
                ax.set_ylabel(ylabel)
                ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
            fig.tight_layout()
            paths += _save(fig, figures_dir / stem)

    pick = pick_systems(systems)
    if pick["plain"] and pick["composite"]:
        for T in temps:
            rdf_curves, msd_curves = [], []
            for n in (pick["plain"], pick["composite"]):
                group = [r for r in runs if r["system"] == n and r["temperature_K"] == T]
                rc = _curve_mean(group, "rdf_Na-O_TFSI.csv", "r (nm)", ["g(r)", "n(r)"])
                if rc is not None:
                    rdf_curves.append({"r_nm": rc["r (nm)"], "g": rc["g(r)"], "cn": rc["n(r)"],
                                       "label": f"{n} (n={rc['n']})"})
                for sp in ("Na", "TFSI"):
                    mc = _curve_mean(group, f"msd_{sp}.csv", "lag (ps)", ["MSD (nm^2)"])
                    if mc is not None:
                        msd_curves.append({"lag_ps": mc["lag (ps)"], "msd_nm2": mc["MSD (nm^2)"],
                                           "label": f"{sp}, {n}"})
            if not rdf_curves or not msd_curves:
                raise InputError(f"study: rdf_Na-O_TFSI.csv / msd_*.csv missing for {pick['plain']} or "
                                 f"{pick['composite']} at {T:g} K")
            paths += plot_rdf(rdf_curves, figures_dir / f"rdf_NaO_TFSI_overlay_{T:g}K",
                              title=f"Na-O(TFSI), {T:g} K, replica mean")
            paths += plot_msd(msd_curves, figures_dir / f"msd_overlay_{T:g}K", title=f"{T:g} K, replica mean")
    return paths


_CSV_FIELDS = ("id", "system", "temperature_K", "quantity", "paper", "paper_source", "ours", "claim", "difference",
               "sigma_combined", "verdict", "note")


def _cell(v):
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return "" if v is None else str(v)


def rows_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in _CSV_FIELDS})
    return buf.getvalue()


def aggregated_csv(agg) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    qs = list(QUANTITIES) + ["rdf_peak1_A", "rdf_peak2_A"]
    header = ["system", "temperature_K", "mof_wt_percent", "mof_metal", "n_replicas"]
    for q in qs + ["npt_density_g_cm3", "cn_NaO_TFSI_common"]:
        header += [q, f"{q}_sigma"]
    header += ["NaO_TFSI_shell_radius_A", "NaO_TFSI_shell_why_null", "NaO_TFSI_common_shell_radius_A",
               "NaO_TFSI_common_shell_why_null"]
    w.writerow(header)
    for (n, T), p in sorted(agg["points"].items()):
        m = agg["systems"][n]
        row = [n, f"{T:g}", f"{m['wt_percent']:.4g}", m["metal"] or "", p["n_replicas"]]
        for q in qs:
            row += [_cell(p[q]["mean"]), _cell(p[q]["sigma"])]
        d = p["npt_density_g_cm3"]
        row += [_cell(d["mean"]), _cell(d["sigma"])] if d else ["", ""]
        c = p["cn_NaO_TFSI_common"]
        row += [_cell(c["mean"]), _cell(c["sigma"]), _cell(p["shell_radius_A"]), p["shell_why_null"],
                _cell(p["common_shell_radius_A"]), p["common_shell_why_null"]]
        w.writerow(row)
    return buf.getvalue()


def table_html(rows) -> str:
    """The comparison table as an HTML fragment (<table id="comparison">)."""
    cols = ("quantity", "system", "temperature_K", "paper", "paper_source", "ours", "claim", "verdict", "note")
    heads = ("Quantity", "System(s)", "T (K)", "Paper", "Paper's source", "Ours (± 1σ)", "Claim tested",
             "Reproduced?", "Note")
    out = ['<table id="comparison" class="comparison">', "<thead><tr>" +
           "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead>", "<tbody>"]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            text = f"{v:g}" if isinstance(v, float) and math.isfinite(v) else ("" if v is None else str(v))
            cls = f' class="verdict-{r["verdict"].replace(" ", "-")}"' if c == "verdict" else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        out.append(f'<tr data-row-id="{html.escape(r["id"])}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out) + "\n"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1400px; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.45em; vertical-align: top; }}
th {{ background: #eee; }}
.verdict-yes {{ background: #d8f0d8; }} .verdict-no {{ background: #f6d6d6; }}
.verdict-inconclusive {{ background: #fff3c4; }} .verdict-not-available {{ color: #777; }}
figure {{ display: inline-block; margin: 0.5em; }} figure img {{ max-width: 640px; }}
#figure-errors {{ color: #a00; }}
</style></head><body>
<h1>{title}</h1>
<p>Our MD numbers (replicas combined, ± 1 standard error) beside {citation}. A claim is reproduced
("yes") when the difference exceeds 2 combined standard errors in the paper's direction, not reproduced
("no") when it exceeds 2 in the other direction, inconclusive otherwise. Experimental numbers of the
paper are compared as trends.</p>
<h2>Comparison with the paper and with measured densities</h2>
{table}
<h2>Figures</h2>
<p id="figure-errors"></p>
{figures}
<script>
// Mark every figure with its decoded size; list any that failed to load.
window.addEventListener("load", function () {{
  var bad = [];
  document.querySelectorAll("img").forEach(function (img) {{
    img.setAttribute("data-natural-width", String(img.naturalWidth));
    if (!(img.complete && img.naturalWidth > 0)) {{ bad.push(img.alt); }}
  }});
  document.body.setAttribute("data-figures-checked", String(document.images.length));
  if (bad.length) {{ document.getElementById("figure-errors").textContent = "Figures that failed to load: " + bad.join(", "); }}
}});
</script>
</body></html>
"""


def page_html(rows, figure_pngs, title="spemd study: comparison with Dong et al. 2025") -> str:
    """Standalone HTML: the comparison table and every PNG figure embedded as a data URI."""
    figs = []
    for p in figure_pngs:
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        name = html.escape(Path(p).stem)
        figs.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption>'
                    "</figure>")
    return _PAGE.format(title=html.escape(title), citation=html.escape(PAPER_CITATION), table=table_html(rows),
                        figures="\n".join(figs))
