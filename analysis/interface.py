"""The interface analysis of one run: what analysis/production.py calls after the bulk analyses.

One extra pass over the trajectory runs, together (analysis/_common.run_together):

- analysis/open_sites.py      surface open-site occupancy per metal type and the anions' site residence;
- analysis/interface_profile.py  rho(d) of Na+, TFSI- (N) and ether O against the face distance, and Gamma;
- analysis/speciation.py      Na+ free/CIP/AGG overall and against the face distance, the free-TFSI- fraction;
- analysis/layer_diffusion.py D_xy of Na+ in the interfacial layer and the film centre.

A slab box (residues BTC FMT FE NI CU) gets all four; a plain box only the overall speciation with the
free-TFSI- fraction (``composite`` false, the slab parts null with the reason). The Na-O(TFSI) shell
radius is the one the bulk pairing used; when it is null, speciation is null with the reason.

Outputs in `out_dir`: ``interface.json`` (keys: docs/contracts.md), for every box
``speciation_free_vs_cutoff.csv`` ("cutoff (nm)", "free Na+ fraction", "free TFSI- fraction" and their
"SEM": the fractions at every cutoff of analysis.speciation.CUTOFF_GRID_NM), and for a slab box
``interface_profile.csv`` ("d (nm)", per species "rho <X> (nm^-3)" and its "SEM"),
``interface_speciation.csv`` ("d (nm)", "Na per frame", per class the fraction and its "SEM"),
``interface_occupancy.csv`` ("time (ps)", per site type and species the occupied fraction),
``interface_layer_msd.csv`` ("lag (ps)", per layer "MSD_xy (nm^2)" and "survival"), and
``figures/interface_{profile,occupancy,speciation}.{png,svg}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spemd.files import write_json_atomic, write_text_atomic
from spemd.provenance import provenance
from spemd.units import nm2_per_ps_to_cm2_per_s

from spemd.analysis._common import csv_text, nan_to_none, run_together
from spemd.analysis.interface_profile import InterfaceProfile
from spemd.analysis.layer_diffusion import LAYERS, LayerDiffusion
from spemd.analysis.open_sites import SPECIES, OpenSiteOccupancy
from spemd.analysis.plots import plot_series
from spemd.analysis.speciation import CLASSES, Speciation
from spemd.analysis.volume import slab_atoms

SELECTIONS = {
    "Na": "resname NA", "O_TFSI": "resname TFS and name O*", "N_TFSI": "resname TFS and name N1",
    "NF_TFSI": "resname TFS and (name N1 or name F*)", "O_ether": "resname PEH PEM and name O*",
    "metal": "resname FE NI CU",
}
#: width (nm) of the interfacial layer: the surface excess and the layer-resolved D
LAYER_NM = 1.0


def _group(u, key):
    g = u.select_atoms(SELECTIONS[key])
    return g if len(g) else None


def analyse_interface(u, out_dir, na_o_shell_nm, temperature_K: float, inputs=(), extra: dict | None = None,
                      r_site_nm=None, r_site_fallback_nm=None) -> dict:
    """Run the interface analyses over `u`'s trajectory; writes interface.json (+ CSVs, figures), returns it."""
    out_dir = Path(out_dir)
    na, o_tfsi = _group(u, "Na"), _group(u, "O_TFSI")
    slab = slab_atoms(u)
    shell = na_o_shell_nm if na_o_shell_nm is not None and np.isfinite(na_o_shell_nm) else None
    spec = Speciation(na, o_tfsi, shell, slab=slab)
    parts = {"speciation": spec}
    metals = _group(u, "metal")
    if slab is not None:
        species = {"Na": na, "TFSI": _group(u, "N_TFSI"), "O_ether": _group(u, "O_ether")}
        parts["profiles"] = InterfaceProfile({k: g for k, g in species.items() if g is not None}, slab,
                                             layer_nm=LAYER_NM)
        parts["layer_diffusion"] = LayerDiffusion(na, slab, layer_nm=LAYER_NM)
        if metals is not None:
            parts["open_sites"] = OpenSiteOccupancy(metals, slab, o_tfsi, _group(u, "NF_TFSI"), _group(u, "O_ether"),
                                                    r_site_nm=r_site_nm, r_site_fallback_nm=r_site_fallback_nm)
    run_together(list(parts.values()))

    curves = spec.results.free_vs_cutoff
    write_text_atomic(out_dir / "speciation_free_vs_cutoff.csv", csv_text(
        ["cutoff (nm)", "free Na+ fraction", "free Na+ fraction SEM", "free TFSI- fraction", "free TFSI- fraction SEM"],
        spec.results.cutoff_grid_nm, *curves["free_Na"], *curves["free_TFSI"]))
    not_composite = None if slab is not None else "not a composite: the box has no MOF slab (residues BTC FMT FE NI CU)"
    sp = spec.results
    result = {
        "system": (extra or {}).get("system"), "replica": (extra or {}).get("replica"),
        "temperature_K": float(temperature_K), "composite": slab is not None, "not_composite_reason": not_composite,
        "n_frames": int(spec.n_frames), "layer_nm": LAYER_NM,
        "speciation": {
            "shell_radius_nm": sp.shell_radius_nm, "reason": sp.reason, "classification": sp.classification,
            **({f"{k.lower()}_fraction": v[0] for k, v in sp.fractions.items()} if sp.fractions else {}),
            **({f"{k.lower()}_fraction_sem": v[1] for k, v in sp.fractions.items()} if sp.fractions else {}),
            "uncertainty_method": "standard error of 5 block means of frames",
        },
        "open_sites": None, "profiles": None, "layer_diffusion": None,
    }
    if slab is not None:
        result["open_sites"] = _open_sites(parts.get("open_sites"))
        result["profiles"] = _profiles(parts["profiles"].results)
        result["layer_diffusion"] = _layers(parts["layer_diffusion"].results)
        _tables_and_figures(parts, out_dir, temperature_K)
    result["provenance"] = provenance(config={"layer_nm": LAYER_NM, "r_site_nm": r_site_nm,
                                              "r_site_fallback_nm": r_site_fallback_nm,
                                              "na_o_shell_nm": na_o_shell_nm},
                                      inputs=list(inputs), extra=dict(extra or {}))
    result = nan_to_none(result)
    write_json_atomic(out_dir / "interface.json", result)
    return result


def _open_sites(a):
    if a is None:
        return {"reason": "the slab has no metal atoms (resname FE NI CU)", "site_types": None}
    return {"reason": a.results.reason, "site_types": a.results.site_types, "species": list(SPECIES),
            "residence_definition": a.results.residence_definition,
            "uncertainty_method": "standard error of 5 block means of frames"}


def _profiles(r):
    out = {"excess_reason": r.excess_reason, "half_film_nm_mean": r.half_film_nm_mean,
           "bin_nm": float(r.edges_nm[1] - r.edges_nm[0]), "species": {}}
    for k, ex in r.excess.items():
        out["species"][k] = {**ex, "selection": SELECTIONS["N_TFSI" if k == "TFSI" else k]}
    return out


def _layers(r):
    out = {"method": "survival-conditioned lateral MSD (Liu, Harder & Berne 2004), D_xy = slope/4",
           "uncertainty_method": "standard error of D over 5 groups of Na+ (index mod 5)"}
    for name in LAYERS:
        lay = dict(r.layers[name])
        for key in ("D", "D_sem"):
            v = lay[f"{key}_nm2_per_ps"]
            lay[f"{key}_cm2_per_s"] = float(nm2_per_ps_to_cm2_per_s(v)) if v is not None and np.isfinite(v) else None
        out[name] = lay
    return out


def _tables_and_figures(parts, out_dir, temperature_K):
    figs = out_dir / "figures"
    title = f"{temperature_K:g} K"
    prof = parts["profiles"].results
    header, cols = ["d (nm)"], [prof.d_nm]
    for k in prof.density_nm3:
        header += [f"rho {k} (nm^-3)", f"rho {k} SEM (nm^-3)"]
        cols += [prof.density_nm3[k], prof.density_sem_nm3[k]]
    write_text_atomic(out_dir / "interface_profile.csv", csv_text(header, *cols))
    plot_series(prof.d_nm, [{"y": prof.density_nm3[k], "err": prof.density_sem_nm3[k], "label": k}
                            for k in prof.density_nm3], figs / "interface_profile",
                "distance from the slab face (nm)", "number density (nm⁻³)", title=title, vlines=(0.0, LAYER_NM))

    sp = parts["speciation"].results
    if sp.reason is None:
        header, cols = ["d (nm)", "Na per frame"], [sp.d_nm, sp.na_per_bin / parts["speciation"].n_frames]
        for c in CLASSES:
            header += [f"{c} fraction", f"{c} fraction SEM"]
            cols += [sp.by_distance[c], sp.by_distance_sem[c]]
        write_text_atomic(out_dir / "interface_speciation.csv", csv_text(header, *cols))
        plot_series(sp.d_nm, [{"y": sp.by_distance[c], "err": sp.by_distance_sem[c], "label": c} for c in CLASSES],
                    figs / "interface_speciation", "distance from the slab face (nm)", "fraction of Na⁺",
                    title=title, vlines=(0.0, LAYER_NM))

    if "open_sites" in parts:
        occ = parts["open_sites"].results
        times = parts["open_sites"].times
        header, cols, curves = ["time (ps)"], [times], []
        for t, series in occ.series.items():
            for species, f in series.items():
                header.append(f"{t} {species}")
                cols.append(f)
                curves.append({"y": f, "label": f"{t} {species}"})
        write_text_atomic(out_dir / "interface_occupancy.csv", csv_text(header, *cols))
        if curves:
            plot_series(times, curves, figs / "interface_occupancy", "time (ps)", "occupied fraction of open sites",
                        title=title)

    lay = parts["layer_diffusion"].results
    header, cols = ["lag (ps)"], [lay.lagtimes_ps]
    for name in LAYERS:
        header += [f"{name} MSD_xy (nm^2)", f"{name} survival"]
        cols += [lay.msd_nm2[name], lay.survival[name]]
    write_text_atomic(out_dir / "interface_layer_msd.csv", csv_text(header, *cols))
