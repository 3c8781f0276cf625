"""The ``spemd analyse`` subcommand: RDF, MSD/D or conductivity of any topology + trajectory.

    spemd analyse rdf --topology T --trajectory X --select A [--select2 B] --out DIR [--r-max-nm 1.0 --bins 200]
    spemd analyse msd --topology T --trajectory X --select A [--compound residues] --out DIR
    spemd analyse conductivity --topology T --trajectory X --select CATIONS --select2 ANIONS
                               --charge-scale 0.8 --temperature-K 353 --out DIR

Any format pair MDAnalysis reads works; ``--dt-ps`` sets the frame interval for formats without one.
Outputs: ``DIR/<kind>.csv`` (curves, units in the column names), ``DIR/<kind>.json`` (numbers with
uncertainties and provenance) and ``DIR/figures/<kind>.png|svg``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from spemd.errors import InputError
from spemd.files import write_json_atomic, write_text_atomic
from spemd.provenance import provenance
from spemd.units import nm_to_angstrom

from spemd.analysis._common import csv_text, load_universe, nan_to_none, select
from spemd.analysis.console import summary_text

KINDS = ("rdf", "msd", "conductivity")


def add_analyse_parser(subparsers):
    """Add ``analyse`` with its sub-subcommands to an argparse subparsers object; returns the parser."""
    p = subparsers.add_parser("analyse", help="analyse any topology + trajectory (rdf, msd, conductivity)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="analyse_kind", required=True, metavar="{rdf,msd,conductivity}")
    for kind in KINDS:
        s = sub.add_parser(kind, help=f"{kind} of a trajectory")
        s.add_argument("--topology", required=True, help="topology file (PDB, GRO, PSF, ...)")
        s.add_argument("--trajectory", required=True, help="trajectory file (DCD, XTC, TRR, ...)")
        s.add_argument("--select", required=True,
                       help="MDAnalysis selection (cations for conductivity); `spemd inspect` suggests some")
        s.add_argument("--select2", default=None,
                       help="second selection (rdf: default = --select; conductivity: anions, required)")
        s.add_argument("--dt-ps", type=float, default=None,
                       help="frame interval (ps) for a trajectory without one (default: the trajectory's)")
        s.add_argument("--out", required=True, help="output folder (<kind>.json, <kind>.csv, figures/)")
        s.add_argument("--start", type=int, default=None, help="first frame index (default: the first frame)")
        s.add_argument("--stop", type=int, default=None, help="frame index to stop before (default: the end)")
        s.add_argument("--step", type=int, default=None, help="use every step-th frame (default: every frame)")
        s.add_argument("--quiet", action="store_true", help="print no summary (default: a short summary on stdout)")
        s.add_argument("--json", action="store_true", help="print the result file's JSON instead of the summary")
        s.add_argument("-v", "--verbose", dest="analyse_verbose", action="store_true",
                       help="show MDAnalysis' and matplotlib's INFO log lines (default: warnings only)")
        if kind == "rdf":
            s.add_argument("--r-max-nm", type=float, default=1.0, help="largest distance r (nm; default %(default)s)")
            s.add_argument("--bins", type=int, default=200, help="number of r bins (default %(default)s)")
            s.add_argument("--exclude-same", choices=("none", "residue"), default="residue",
                           help="skip pairs within one residue ('residue') or none (default %(default)s)")
            s.add_argument("--accessible-volume-nm3", type=float, default=None,
                           help="normalise g(r) by this volume (nm^3) instead of the box volume (default: the box's)")
            s.add_argument("--normalisation", choices=("volume", "lateral"), default="volume",
                           help="'lateral' for a slab box: an ideal gas at each atom's own height (analysis/rdf.py); "
                                "default %(default)s")
        else:
            s.add_argument("--fit-start-fraction", type=float, default=0.1,
                           help="earliest start of the diffusive fit window, as a fraction of the longest lag "
                                "(dimensionless; default %(default)s)")
            s.add_argument("--fit-end-fraction", type=float, default=0.5,
                           help="latest end of the diffusive fit window, as a fraction of the longest lag "
                                "(dimensionless; default %(default)s)")
        if kind == "msd":
            s.add_argument("--compound", choices=("atoms", "residues", "molecules"), default="atoms",
                           help="MSD of atoms or of residue/molecule centres of mass (default %(default)s)")
            s.add_argument("--no-unwrap", action="store_true",
                           help="coordinates are already unwrapped (default: unwrap across the box)")
        if kind == "conductivity":
            s.add_argument("--charge-scale", type=float, default=1.0,
                           help="ionic charge scale of the force field (dimensionless; default %(default)s)")
            s.add_argument("--temperature-K", type=float, required=True, help="temperature (K)")
        s.set_defaults(func=run)
    return p


def _load(args):
    if args.dt_ps is not None and not args.dt_ps > 0:
        raise InputError(f"--dt-ps: {args.dt_ps!r} must be > 0")
    return load_universe(args.topology, args.trajectory, dt_ps=args.dt_ps)


def run(args) -> int:
    """Run the ``analyse`` subcommand described by parsed `args`; returns 0."""
    kind = args.analyse_kind
    out = Path(args.out)
    if not (getattr(args, "verbose", False) or getattr(args, "analyse_verbose", False)):
        for name in ("MDAnalysis", "matplotlib"):  # their INFO lines bury the summary
            logging.getLogger(name).setLevel(logging.WARNING)
    u = _load(args)
    run_kw = dict(start=args.start, stop=args.stop, step=args.step)
    g1 = select(u, args.select, "--select")
    record = {"kind": kind, "topology": str(args.topology), "trajectory": str(args.trajectory),
              "select": args.select, "select2": args.select2}
    figs = out / "figures"
    if kind == "rdf":
        from spemd.analysis.plots import plot_rdf
        from spemd.analysis.rdf import RDF, rdf_table

        g2 = select(u, args.select2, "--select2") if args.select2 else g1
        r = RDF(g1, g2, r_max_nm=args.r_max_nm, bins=args.bins,
                exclude_same=None if args.exclude_same == "none" else "residue",
                accessible_volume_nm3=args.accessible_volume_nm3, normalisation=args.normalisation).run(**run_kw)
        res = r.results
        header, columns = rdf_table(res)
        write_text_atomic(out / "rdf.csv", csv_text(header, *columns))
        record.update({"normalisation": res.normalisation, "peaks_A": list(nm_to_angstrom(np.asarray(res.peaks_nm))),
                       "first_shell_radius_nm": res.first_shell_radius_nm,
                       "first_shell_radius_A": nm_to_angstrom(res.first_shell_radius_nm),
                       "first_shell_cn": res.first_shell_cn, "n_frames": res.n_frames,
                       # why there is no shell, and the CN's error, where this RDF version gives them
                       **{k: res[k] for k in ("first_shell_reason", "first_shell_cn_sem") if k in res}})
        plot_rdf([{"r_nm": res.bins_nm, "g": res.rdf, "cn": res.cn, "label": "A-B",
                   "first_shell_radius_nm": res.first_shell_radius_nm}], figs / "rdf")
    elif kind == "msd":
        from spemd.analysis.msd import MSD
        from spemd.analysis.plots import plot_msd

        m = MSD(g1, compound=args.compound, unwrap=not args.no_unwrap, fit_start_fraction=args.fit_start_fraction,
                fit_end_fraction=args.fit_end_fraction).run(**run_kw)
        res = m.results
        write_text_atomic(out / "msd.csv", csv_text(["lag (ps)", "MSD (nm^2)"], res.lagtimes_ps, res.msd_nm2))
        record.update({k: res[k] for k in ("D_nm2_per_ps", "D_sigma_nm2_per_ps", "D_cm2_per_s", "D_sigma_cm2_per_s",
                                           "diffusive", "no_window_reason", "beta", "beta_range", "fit_window_ps",
                                           "uncertainty_method", "n_particles", "dt_ps")},
                      **{k: res[k] for k in ("flags", "beta_flag") if k in res})
        plot_msd([{"lag_ps": res.lagtimes_ps, "msd_nm2": res.msd_nm2, "label": args.select,
                   "fit_window_ps": res.fit_window_ps, "D_nm2_per_ps": res.D_nm2_per_ps,
                   "dim": res.dimension, "beta": res.beta}], figs / "msd")
    else:
        from spemd.analysis.conductivity import Conductivity

        if not args.select2:
            raise InputError("--select2: required for conductivity (the anions); e.g. 'resname TFS'")
        g2 = select(u, args.select2, "--select2")
        c = Conductivity(g1, g2, charge_scale=args.charge_scale, temperature_K=args.temperature_K,
                         fit_start_fraction=args.fit_start_fraction,
                         fit_end_fraction=args.fit_end_fraction).run(**run_kw)
        res = c.results
        eh = {k: v for k, v in res.einstein_helfand.items() if not isinstance(v, np.ndarray)}
        record.update({"nernst_einstein": res.nernst_einstein, "einstein_helfand": eh,
                       "D_cation": dict(res.D_cation), "D_anion": dict(res.D_anion),
                       "haven_ratio": res.haven_ratio, "haven_ratio_err": res.haven_ratio_err})
        lags = res.einstein_helfand["lagtimes_ps"]
        write_text_atomic(out / "conductivity.csv",
                          csv_text(["lag (ps)", "MSD M+ (e^2 nm^2)", "MSD M- (e^2 nm^2)", "cross M+.M- (e^2 nm^2)",
                                "MSD M (e^2 nm^2)"], lags, res.einstein_helfand["msd_M_plus"],
                               res.einstein_helfand["msd_M_minus"], res.einstein_helfand["msd_M_cross"],
                               res.einstein_helfand["msd_M_total"]))
    record["provenance"] = provenance(config={k: v for k, v in vars(args).items() if k != "func"},
                                      inputs=[args.topology, args.trajectory])
    result_file = out / f"{kind}.json"
    write_json_atomic(result_file, nan_to_none(record))
    if getattr(args, "json", False):
        print(result_file.read_text().rstrip())
    elif not getattr(args, "quiet", False):
        print(summary_text(kind, json.loads(result_file.read_text())))
        print(f"  written: {result_file}")
    return 0


def main(argv=None) -> int:
    """Standalone entry (``python -m spemd.analysis.cli analyse ...``) until pipeline/cli.py hooks it in."""
    import sys

    from spemd.errors import SpemdError

    parser = argparse.ArgumentParser(prog="spemd")
    add_analyse_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpemdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
