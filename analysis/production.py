"""Analysis of one run's production trajectory: the function the workflow calls.

:func:`analyse_production` reads the topology (PDB with CONECT) and trajectory (DCD) of a production
stage, computes in ONE pass over the trajectory the RDFs of the pairs below and the unwrapped
positions of Na+ atoms and TFSI- centres of mass, then derives D (per species, with uncertainty),
Nernst-Einstein and Einstein-Helfand conductivities, transference numbers, and in a second pass the
ion-pairing fractions and Na-O(TFSI) residence times with the Na-O(TFSI) first-shell radius.

Selections (docs/contracts.md): Na ``resname NA``; O(TFSI) ``resname TFS and name O*``; N(TFSI)
``resname TFS and name N1``; O(ether) ``resname PEH PEM and name O*``; MOF metal ``resname FE NI CU``.
Pairs: Na-O_TFSI, Na-O_ether, Na-N_TFSI, Na-metal (only with a MOF), Na-Na. Same-residue pairs are
excluded. g(r) is normalised by the per-frame box volume of a plain box; with a MOF slab (residues
``BTC FMT FE NI CU``) by an ideal gas at each atom's own height (analysis/rdf.py, "lateral");
``rdf_accessible_volume_nm3`` sets a fixed volume instead. The carrier volume of the Nernst-Einstein and
Einstein-Helfand conductivities is the box volume of a plain box, the electrolyte's occupied volume
of a slab box (analysis/volume.py: power-diagram cells of the electrolyte atoms).

Outputs in `out_dir`: ``rdf_<pair>.csv`` (columns "r (nm)", "g(r)", "n(r)", "g(r) SEM", "g(r) finite-size
corrected", "g(r) finite-size corrected SEM", "n(r) SEM"; analysis/rdf.py: Ganguly-van der Vegt correction, jackknife
errors over the Na+ ions), ``msd_<species>.csv``
("lag (ps)", "MSD (nm^2)"), ``transport.json`` and ``figures/{rdf_<pair>,rdf_all,msd}.{png,svg}``, and from
analysis/interface.py (one more pass) ``interface.json`` with its CSVs and figures.

transport.json keys: system, replica, temperature_K, charge_scale, n_frames, dt_ps, time_span_ps,
mean_volume_nm3, electrolyte {volume_nm3_mean, volume_nm3_sd, volume_nm3_sem (the strided mean's error),
volume_frames, volume_stride_frames (analysis/volume.py: the volume is computed on a stride), density_g_cm3_mean,
density_g_cm3 (on volume_frames), film_centre_density_g_cm3_mean, film_centre_density_g_cm3 (per frame),
salt_mass_fraction (Na + TFSI mass over the electrolyte's), film_centre_salt_mass_fraction_mean and per
frame, film_centre_polymer_density_g_cm3_mean (analysis/volume.py; a plain box's band is the box), method,
slab}, n_ions {Na, TFSI}, diffusion {Na, TFSI: D_nm2_per_ps, D_sigma_nm2_per_ps,
D_cm2_per_s, D_sigma_cm2_per_s (GLS of MSD = 6Dt + c over the constant-slope window, NaN without one), diffusive,
no_window_reason, beta (information), beta_flag (null, "cage offset", "negative offset", "sub-diffusive",
"super-diffusive"), offset_nm2, beta_range, beta_ok, fit_window_ps, search_window_ps, slope_tests, drift,
flags, uncertainty_method, ...}, conductivity {sigma_NE_S_per_cm, sigma_NE_err_S_per_cm, sigma_EH_S_per_cm,
sigma_EH_err_S_per_cm, sigma_plus_plus/minus_minus/plus_minus_S_per_cm, t_plus_ideal(_err),
t_plus_collective(_err), haven_ratio(_err) (with the sigma_NE-sigma_EH covariance,
sigma_NE_EH_covariance_S2_per_cm2), EH_diffusive, EH_no_window_reason, charge_scale,
uncertainty methods}, rdf {pair: r_max_nm, bins,
normalisation, peaks_A, first_peak_A, first_shell_radius_nm, first_shell_radius_A, first_shell_cn,
first_shell_cn_sem, first_shell_source ("minimum of g(r)", "config ..." or "fallback
analysis.shell_radius_fallback_nm" where the run's own minimum was refused), first_shell_reason (null when
found; a null radius always has one),
first_shell_bounds_A (Na-O(TFSI) 2.8-4.0, Na-O(ether) 2.8-4.5; else null), tail
{window_nm, window_A, g, g_sem, g_corrected, g_corrected_sem, n_bins, uncertainty_method} (the mean of g
over analysis.rdf_tail_window_nm, which is 1 for a structureless reference; null when the window lies
beyond r_max)},
pairing {free_fraction, cip_fraction, agg_fraction (+ _sem), cutoff_nm, tau_continuous_ps,
cutoff_source, tau_intermittent_ps, ...} or null, flags [strings], provenance. Non-finite numbers are written as null.

analysis_cfg keys: rdf_r_max_nm (clipped to half the shortest box width with a warning), rdf_bins,
msd_fit_start_fraction, msd_fit_end_fraction (the range the diffusive window is searched in),
rdf_tail_window_nm, and optionally rdf_accessible_volume_nm3.
For very short trajectories a fit window with < 2 lags is widened to all lags (flagged) so that
finite numbers come out; beta is then flagged as not diffusive.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from spemd.errors import ConfigError, InputError
from spemd.files import write_json_atomic, write_text_atomic
from spemd.provenance import provenance
from spemd.units import density_g_per_cm3, nm_to_angstrom

from spemd.analysis._common import csv_text, half_min_width_nm, load_universe, nan_to_none, run_together, select
from spemd.analysis.conductivity import conductivity_from_positions
from spemd.analysis.interface import analyse_interface
from spemd.analysis.msd import MSD, fit_window
from spemd.analysis.pairing import IonPairing
from spemd.analysis.plots import plot_msd, plot_rdf
from spemd.analysis.rdf import RDF, SHELL_BOUNDS_NM, rdf_table
from spemd.analysis.volume import ElectrolyteVolume, slab_atoms

SELECTIONS = {
    "Na": "resname NA",
    "O_TFSI": "resname TFS and name O*",
    "N_TFSI": "resname TFS and name N1",
    "O_ether": "resname PEH PEM and name O*",
    "metal": "resname FE NI CU",
    "TFSI": "resname TFS",
}
PAIRS = (("Na-O_TFSI", "Na", "O_TFSI"), ("Na-O_ether", "Na", "O_ether"), ("Na-N_TFSI", "Na", "N_TFSI"),
         ("Na-metal", "Na", "metal"), ("Na-Na", "Na", "Na"))
CFG_DEFAULTS = {"rdf_r_max_nm": 1.0, "rdf_bins": 200, "msd_fit_start_fraction": 0.1, "msd_fit_end_fraction": 0.5,
                "rdf_accessible_volume_nm3": None, "shell_radius_nm": {}, "shell_radius_fallback_nm": {},
                "rdf_tail_window_nm": [0.6, 0.8], "open_site_radius_nm": None, "open_site_radius_fallback_nm": None}
_FIT_KEYS = ("D_nm2_per_ps", "D_sigma_nm2_per_ps", "D_cm2_per_s", "D_sigma_cm2_per_s", "diffusive", "no_window_reason",
             "beta", "beta_range", "beta_ok", "beta_tolerance", "fit_window_ps", "search_window_ps", "window_selection",
             "uncertainty_method", "fit_chi2_per_dof", "dimension", "beta_flag", "offset_nm2", "flags", "fit_lags",
             "slope_tests", "local_slopes_nm2_per_ps", "drift", "power_law")


def _config(analysis_cfg):
    cfg = dict(CFG_DEFAULTS)
    for k, v in (analysis_cfg or {}).items():
        if k not in CFG_DEFAULTS:
            raise ConfigError(f"unknown key analysis.{k}; allowed keys here: {', '.join(sorted(CFG_DEFAULTS))}")
        cfg[k] = v
    window = cfg["rdf_tail_window_nm"]
    if not (isinstance(window, (list, tuple)) and len(window) == 2
            and all(isinstance(x, (int, float)) for x in window) and 0 <= window[0] < window[1]):
        raise ConfigError(f"analysis.rdf_tail_window_nm: {window!r} must be [r_lo, r_hi] in nm with 0 <= r_lo < r_hi")
    pair_names = [p[0] for p in PAIRS]
    for key in ("shell_radius_nm", "shell_radius_fallback_nm"):
        for pair, radius in (cfg[key] or {}).items():
            if pair not in pair_names:
                raise ConfigError(f"analysis.{key}: unknown pair {pair!r}; allowed pairs: {', '.join(pair_names)}")
            if not (isinstance(radius, (int, float)) and not isinstance(radius, bool) and radius > 0):
                raise ConfigError(f"analysis.{key}.{pair}: {radius!r} must be a radius > 0 nm")
    return cfg


def _tail(rdf, window_nm, r_max_nm, name, flags):
    """Mean g over the tail window, raw and finite-size corrected, with jackknife errors; None beyond r_max."""
    lo, hi = (float(x) for x in window_nm)
    if hi > r_max_nm * (1 + 1e-9):
        flags.append(f"{name}: g(r) tail window [{lo}, {hi}] nm lies beyond r_max {r_max_nm:g} nm; no tail reported")
        return None
    raw, corr = rdf.window_mean(lo, hi, corrected=False), rdf.window_mean(lo, hi)
    return {"window_nm": [lo, hi], "window_A": [float(nm_to_angstrom(lo)), float(nm_to_angstrom(hi))],
            "g": raw["mean"], "g_sem": raw["sem"], "g_corrected": corr["mean"], "g_corrected_sem": corr["sem"],
            "n_bins": raw["n_bins"],
            "uncertainty_method": "delete-one jackknife over the Na+ ions (analysis/rdf.py)"}


def _optional(u, key):
    try:
        return select(u, SELECTIONS[key], key)
    except InputError:
        return None


def analyse_production(topology, trajectory, out_dir, analysis_cfg: dict, charge_scale: float,
                       temperature_K: float, provenance_extra: dict | None = None) -> dict:
    """Analyse a production trajectory; writes the files listed in the module docstring, returns transport.json."""
    cfg = _config(analysis_cfg)
    if not temperature_K > 0:
        raise ConfigError(f"temperature_K: {temperature_K!r} must be > 0")
    if not charge_scale > 0:
        raise ConfigError(f"charge_scale: {charge_scale!r} must be > 0")
    out_dir = Path(out_dir)
    u = load_universe(topology, trajectory)
    T = u.trajectory.n_frames
    if T < 3:
        raise InputError(f"trajectory {trajectory}: {T} frame(s); at least 3 are needed for MSD and conductivity")
    flags = []
    na = select(u, SELECTIONS["Na"], "Na selection")
    tfsi = select(u, SELECTIONS["TFSI"], "TFSI selection")
    groups = {k: _optional(u, k) for k in ("O_TFSI", "N_TFSI", "O_ether", "metal")}
    groups["Na"] = na
    slab = slab_atoms(u)
    electrolyte = None if slab is None else ElectrolyteVolume(slab, u.atoms - slab, salt=na + tfsi)

    # r_max: half the shortest box width over (a sample of) the frames
    step = max(1, T // 20)
    limits = [half_min_width_nm(ts.dimensions) for ts in u.trajectory[::step]]
    limits.append(half_min_width_nm(u.trajectory[-1].dimensions))
    r_max = float(cfg["rdf_r_max_nm"])
    if r_max > min(limits):
        warnings.warn(f"analysis.rdf_r_max_nm={r_max} clipped to half the shortest box width {min(limits):.4g} nm",
                      RuntimeWarning, stacklevel=2)
        flags.append(f"rdf_r_max_nm clipped from {r_max} to {min(limits):.6g} nm (half the shortest box width)")
        r_max = float(np.floor(min(limits) * 1e4) / 1e4)

    start, end = float(cfg["msd_fit_start_fraction"]), float(cfg["msd_fit_end_fraction"])
    try:
        fit_window(T, start, end)
    except InputError:
        flags.append(f"MSD fit window [{start}, {end}] has < 2 lags with {T} frames; widened to all lags")
        start, end = 0.0, 1.0
    rdfs = {}
    for name, a, b in PAIRS:
        if groups.get(b) is None:
            if b != "metal":
                flags.append(f"pair {name} skipped: selection {SELECTIONS[b]!r} matches no atoms")
            continue
        fixed = cfg["rdf_accessible_volume_nm3"]
        lateral = electrolyte is not None and fixed is None  # slab box: ideal gas at each atom's height
        rdfs[name] = RDF(groups[a], groups[b], r_max_nm=r_max, bins=int(cfg["rdf_bins"]), exclude_same="residue",
                         accessible_volume_nm3=fixed, normalisation="lateral" if lateral else "volume",
                         shell_bounds_nm=SHELL_BOUNDS_NM.get(name))
    fit_kw = dict(fit_start_fraction=start, fit_end_fraction=end)
    msds = {"Na": MSD(na, compound="atoms", **fit_kw), "TFSI": MSD(tfsi, compound="residues", **fit_kw)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # r_max already checked above
        run_together(list(rdfs.values()) + list(msds.values()) + ([electrolyte] if electrolyte else []))

    dt = float(msds["Na"].results.dt_ps)
    volume = float(msds["Na"].results.mean_volume_nm3)
    if electrolyte is None:  # plain box: the electrolyte is the box
        mass = float(np.sum(u.atoms.masses))
        rho = density_g_per_cm3(mass, volume)
        w_salt = float(np.sum(na.masses) + np.sum(tfsi.masses)) / mass
        e_out = {"volume_nm3_mean": volume, "density_g_cm3_mean": rho, "film_centre_density_g_cm3_mean": rho,
                 "salt_mass_fraction": w_salt, "film_centre_salt_mass_fraction_mean": w_salt,
                 "film_centre_polymer_density_g_cm3_mean": (1.0 - w_salt) * rho,
                 "method": "box volume (no slab)", "slab": False}
        e_volume = volume
    else:
        er = electrolyte.results
        e_volume = er.mean_volume_nm3
        e_out = {"volume_nm3_mean": e_volume, "volume_nm3_sd": er.sd_volume_nm3,
                 "volume_nm3_sem": er.sem_volume_nm3, "volume_frames": er.volume_frames,
                 "volume_stride_frames": er.volume_stride_frames, "density_g_cm3_mean": er.mean_density_g_cm3,
                 "density_g_cm3": [float(x) for x in er.density_g_cm3],
                 "film_centre_density_g_cm3_mean": er.mean_film_centre_density_g_cm3,
                 "film_centre_density_g_cm3": [float(x) for x in er.film_centre_density_g_cm3],
                 "salt_mass_fraction": er.salt_mass_fraction,
                 "film_centre_salt_mass_fraction_mean": er.mean_film_centre_salt_mass_fraction,
                 "film_centre_salt_mass_fraction": [float(x) for x in er.film_centre_salt_mass_fraction],
                 "film_centre_polymer_density_g_cm3_mean": er.mean_film_centre_polymer_density_g_cm3,
                 "method": er.method, "slab": True}
    diffusion = {}
    for sp, m in msds.items():
        d = {k: m.results[k] for k in _FIT_KEYS}
        d["max_step_fraction"] = m.results.max_step_fraction
        d["n_particles"] = m.results.n_particles
        diffusion[sp] = d
        if not m.results.diffusive:
            flags.append(f"{sp}: D not reported: {m.results.no_window_reason}")
        flags += [f"{sp}: {f}" for f in m.results.flags if m.results.diffusive or not f.endswith("D refused")]
        if not m.results.unwrap_precondition_ok:
            flags.append(f"{sp}: a particle moved close to half the box between frames; unwrapping may be wrong")
    cond = conductivity_from_positions(msds["Na"].results.positions_nm, msds["TFSI"].results.positions_nm, dt,
                                       e_volume, temperature_K, charge_scale,
                                       cation_fit=diffusion["Na"], anion_fit=diffusion["TFSI"], **fit_kw)
    ne, eh = cond["nernst_einstein"], cond["einstein_helfand"]
    conductivity = {
        "sigma_NE_S_per_cm": ne["sigma_S_per_cm"], "sigma_NE_err_S_per_cm": ne["sigma_err_S_per_cm"],
        "sigma_EH_S_per_cm": eh["sigma_EH_S_per_cm"], "sigma_EH_err_S_per_cm": eh["sigma_EH_err_S_per_cm"],
        "sigma_plus_plus_S_per_cm": eh["sigma_plus_plus_S_per_cm"],
        "sigma_minus_minus_S_per_cm": eh["sigma_minus_minus_S_per_cm"],
        "sigma_plus_minus_S_per_cm": eh["sigma_plus_minus_S_per_cm"],
        "t_plus_ideal": ne["t_plus"], "t_plus_ideal_err": ne["t_plus_err"],
        "t_plus_collective": eh["t_plus_collective"], "t_plus_collective_err": eh["t_plus_collective_err"],
        "haven_ratio": cond["haven_ratio"], "haven_ratio_err": cond["haven_ratio_err"],
        "sigma_NE_EH_covariance_S2_per_cm2": cond["ne_eh_covariance"],
        "haven_ratio_uncertainty_method": "first-order propagation with the sigma_NE-sigma_EH covariance",
        "EH_diffusive": eh["diffusive"], "EH_no_window_reason": eh["no_window_reason"], "beta_M": eh["beta_M"],
        "charge_scale": float(charge_scale),
        "sigma_NE_uncertainty_method": "first-order propagation of sigma_D",
        "sigma_EH_uncertainty_method": eh["uncertainty_method"], "fit_window_ps": eh["fit_window_ps"],
    }

    rdf_out = {}
    for name, r in rdfs.items():
        res = r.results
        rc, cn, cn_sem, source = (res.first_shell_radius_nm, res.first_shell_cn, res.first_shell_cn_sem,
                                  "minimum of g(r)")
        reason = res.first_shell_reason
        if name in cfg["shell_radius_nm"]:  # the user's radius; n(r) is tabulated at the bins' upper edges
            rc = float(cfg["shell_radius_nm"][name])
            cn, source = float(np.interp(rc, res.edges_nm[1:], res.cn)), "config analysis.shell_radius_nm"
            cn_sem, reason = float(np.interp(rc, res.edges_nm[1:], res.cn_sem)), None
        elif not np.isfinite(rc) and name in cfg["shell_radius_fallback_nm"]:
            # the run's own g(r) has no significant minimum: the model's radius, so that pairing and the
            # free-TFSI- fraction still exist; first_shell_reason keeps why the run's own was refused
            rc = float(cfg["shell_radius_fallback_nm"][name])
            cn, source = float(np.interp(rc, res.edges_nm[1:], res.cn)), "fallback analysis.shell_radius_fallback_nm"
            cn_sem = float(np.interp(rc, res.edges_nm[1:], res.cn_sem))
        bounds = SHELL_BOUNDS_NM.get(name)
        rdf_out[name] = {
            "selection_a": SELECTIONS[dict((p[0], p[1]) for p in PAIRS)[name]],
            "selection_b": SELECTIONS[dict((p[0], p[2]) for p in PAIRS)[name]],
            "r_max_nm": r_max, "bins": int(cfg["rdf_bins"]), "normalisation": res.normalisation,
            "peaks_A": [float(x) for x in nm_to_angstrom(np.asarray(res.peaks_nm))],
            "first_peak_A": float(nm_to_angstrom(res.first_peak_nm)),
            "first_shell_radius_nm": rc, "first_shell_radius_A": float(nm_to_angstrom(rc)),
            "first_shell_cn": cn, "first_shell_cn_sem": cn_sem, "first_shell_source": source,
            "first_shell_reason": reason,
            "first_shell_bounds_A": None if bounds is None else [float(x) for x in nm_to_angstrom(np.asarray(bounds))],
        }
        if not np.isfinite(rc):
            flags.append(f"{name}: no first shell: {reason}")
        rdf_out[name]["tail"] = _tail(rdfs[name], cfg["rdf_tail_window_nm"], r_max, name, flags)
        header, columns = rdf_table(res)
        write_text_atomic(out_dir / f"rdf_{name}.csv", csv_text(header, *columns))
    for sp, m in msds.items():
        write_text_atomic(out_dir / f"msd_{sp}.csv",
                          csv_text(["lag (ps)", "MSD (nm^2)"], m.results.lagtimes_ps, m.results.msd_nm2))

    pairing = None
    rc = rdf_out["Na-O_TFSI"]["first_shell_radius_nm"] if "Na-O_TFSI" in rdf_out else float("nan")
    if np.isfinite(rc):
        p = IonPairing(na, groups["O_TFSI"], rc).run()
        pairing = {k: p.results[k] for k in ("free_fraction", "free_fraction_sem", "cip_fraction", "cip_fraction_sem",
                                             "agg_fraction", "agg_fraction_sem", "mean_bound_oxygens", "cutoff_nm",
                                             "classification")}
        pairing["cutoff_A"] = float(nm_to_angstrom(rc))
        pairing["cutoff_source"] = rdf_out["Na-O_TFSI"]["first_shell_source"]
        for k in ("tau_continuous_ps", "tau_intermittent_ps", "tau_continuous_lower_bound",
                  "tau_intermittent_lower_bound", "residence_definition"):
            pairing[k] = p.results.get(k)
    else:
        why = rdf_out["Na-O_TFSI"]["first_shell_reason"] if "Na-O_TFSI" in rdf_out else "no Na-O(TFSI) pair"
        flags.append(f"pairing and residence skipped: no Na-O(TFSI) first-shell radius ({why})")

    figs = out_dir / "figures"
    for name, r in rdfs.items():
        plot_rdf([{"r_nm": r.results.bins_nm, "g": r.results.rdf, "cn": r.results.cn, "label": name,
                   "first_shell_radius_nm": rdf_out[name]["first_shell_radius_nm"]}], figs / f"rdf_{name}",
                 title=f"{name}, {temperature_K:g} K")
    plot_rdf([{"r_nm": r.results.bins_nm, "g": r.results.rdf, "cn": r.results.cn, "label": n}
              for n, r in rdfs.items()], figs / "rdf_all", title=f"{temperature_K:g} K")
    plot_msd([{"lag_ps": m.results.lagtimes_ps, "msd_nm2": m.results.msd_nm2, "label": sp,
               "fit_window_ps": m.results.fit_window_ps, "D_nm2_per_ps": m.results.D_nm2_per_ps,
               "dim": 3, "beta": m.results.beta} for sp, m in msds.items()], figs / "msd",
             title=f"{temperature_K:g} K")

    extra = dict(provenance_extra or {})
    result = {
        "system": extra.get("system"), "replica": extra.get("replica"),
        "temperature_K": float(temperature_K), "charge_scale": float(charge_scale),
        "n_frames": int(T), "dt_ps": dt, "time_span_ps": dt * (T - 1), "mean_volume_nm3": volume,
        "electrolyte": e_out,
        "n_ions": {"Na": int(len(na)), "TFSI": int(msds["TFSI"].results.n_particles)},
        "diffusion": diffusion, "conductivity": conductivity, "rdf": rdf_out, "pairing": pairing, "flags": flags,
        "provenance": provenance(config={"analysis": cfg, "charge_scale": charge_scale,
                                         "temperature_K": temperature_K},
                                 inputs=[topology, trajectory], extra=extra),
    }
    result = nan_to_none(result)
    # composites: open sites, z-profiles, speciation by distance, layer D; plain boxes: the free-TFSI- fraction
    analyse_interface(u, out_dir, rdf_out.get("Na-O_TFSI", {}).get("first_shell_radius_nm"), temperature_K,
                      inputs=[topology, trajectory], extra=extra, r_site_nm=cfg["open_site_radius_nm"],
                      r_site_fallback_nm=cfg["open_site_radius_fallback_nm"])
    write_json_atomic(out_dir / "transport.json", result)
    return result
