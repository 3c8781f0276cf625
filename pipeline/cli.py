"""The ``spemd`` command line: one subcommand per workflow step.

Each subcommand calls one plain Python function of the packages; the Snakefile calls these
subcommands and holds no science. Configuration is passed either as a YAML file (``--config``) or as
the JSON of the sections a step needs (``--config-json``, what the Snakefile does so that a change in
an unrelated section does not rerun a step). Errors print one line (no traceback) and exit non-zero;
a simulation stage that stopped cleanly before its wall-time limit exits with 75 ("rerun to
continue"), so that a scheduler's retry resumes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from importlib import metadata
from pathlib import Path

from spemd.config import load_config, replica_seed, validate_sections
from spemd.errors import ConfigError, InputError, SpemdError, StageIncomplete, one_of

EXIT_ERROR = 1
#: EX_TEMPFAIL: the stage checkpointed and stopped before its wall-time budget ran out.
EXIT_RERUN_TO_CONTINUE = 75


def _config(args, required: tuple[str, ...] = ()) -> dict:
    """The validated config; `required` are the sections this step cannot run without."""
    if getattr(args, "config_json", None):
        try:
            partial = json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config-json: not valid JSON ({exc.msg} at character {exc.pos})") from None
        config = validate_sections(partial)
        source = "--config-json"
    elif getattr(args, "config", None):
        config = load_config(args.config)
        source = args.config
    else:
        raise ConfigError("give --config FILE or --config-json JSON")
    missing = [s for s in required if s not in config]
    if missing:
        raise ConfigError(f"{source}: section {missing[0]!r} is missing; `spemd {args.command}` needs: {', '.join(required)}")
    return config


def _add_config_args(p):
    p.add_argument("--config", help="workflow YAML config (validated against the schema)")
    p.add_argument("--config-json", help="JSON of the config sections this step needs (used by the Snakefile)")


def cmd_validate(args):
    from spemd.pipeline.platforms import check_requested_platform

    config = load_config(args.config)
    if args.remote:
        where = f"platform {config['platform']['name']} not checked (--remote: the jobs run on other machines)"
    else:
        check_requested_platform(config["platform"])
        where = f"platform {config['platform']['name']} available here"
    print(f"{args.config}: valid; systems: {', '.join(config['systems'])}; temperatures (K): {config['temperatures_K']}; {where}")


def cmd_build(args):
    from spemd.systems.build import build_box

    config = _config(args, ("systems",))
    if args.system not in config["systems"]:
        raise ConfigError(f"--system: {args.system!r} is not in systems; allowed values: {', '.join(config['systems'])}")
    cutoff = config.get("forcefield", {}).get("nonbonded_cutoff_nm", 1.0)
    build_box(
        args.system,
        config["systems"][args.system],
        config.get("build", {}),
        seed=replica_seed(config, args.replica),
        out_dir=Path(args.out),
        cutoff_nm=cutoff,
    )


def merge_calibration(ff_cfg: dict, calibration_file, targets_eV: dict | None = None) -> dict:
    """ff_cfg with the fitted metal-O(TFSI) pairs of a calibration.json merged into metal_o_tfsi.

    A file fitted with another MOF charge set, or to other targets than `targets_eV` (calibration.targets_eV),
    is refused: its terms reproduce their targets only as fitted.
    """
    from spemd.forcefields.cluster_calibration import load_terms
    from spemd.forcefields.mof_charges import DEFAULT_SET
    from spemd.forcefields.parametrise import DEFAULT_SCALES

    cal = load_terms(calibration_file)
    fitted_set, used_set = cal["mof_charges"], ff_cfg.get("mof_charges", DEFAULT_SET)
    if fitted_set != used_set:
        raise ConfigError(
            f"forcefield.mof_charges: {used_set!r} differs from {fitted_set!r}, the charge set {calibration_file} was fitted with; "
            f"set forcefield.mof_charges: {fitted_set!r} or calibration.refit: true"
        )
    for model, fitted_target in cal["target_eV"].items():
        wanted = (targets_eV or {}).get(model)
        if wanted is not None and not math.isclose(float(wanted), float(fitted_target), abs_tol=1e-9):
            raise ConfigError(
                f"calibration.targets_eV.{model}: {wanted!r} differs from {fitted_target!r}, the target of {calibration_file}; "
                "set calibration.refit: true to refit"
            )
    # a pair fitted under one charge model reproduces its target only under that model
    for key, default in DEFAULT_SCALES.items():
        fitted_at = cal.get(key)
        used = ff_cfg.get(key, default)
        if fitted_at is not None and not math.isclose(float(fitted_at), float(used), rel_tol=1e-9):
            raise ConfigError(
                f"forcefield.{key}: {used!r} differs from {fitted_at!r}, the value {calibration_file} was fitted at; "
                f"set forcefield.{key}: {fitted_at!r} or recalibrate"
            )
    merged = {**(ff_cfg.get("metal_o_tfsi") or {}), **cal["fitted"]}
    return {**ff_cfg, "metal_o_tfsi": merged, "calibration": {k: cal[k] for k in ("metal", "target_eV", "achieved_eV", "mof_charge_scale", "file")}}


def cmd_parametrise(args):
    from spemd.forcefields.parametrise import parametrise

    config = _config(args)
    ff_cfg = config.get("forcefield", {})
    if args.calibration:
        ff_cfg = merge_calibration(ff_cfg, Path(args.calibration), (config.get("calibration") or {}).get("targets_eV"))
    parametrise(Path(args.box), ff_cfg, Path(args.out))


def cmd_calibrate(args):
    from spemd.forcefields.cluster_calibration import CLUSTERS, calibrate

    config = _config(args)
    models = args.metal or list(CLUSTERS)
    for m in models:
        if m not in CLUSTERS:
            raise ConfigError(one_of("--metal", m, list(CLUSTERS)))
    record = calibrate(config.get("forcefield", {}), config.get("calibration", {}), Path(args.out) / "calibration.json", models)
    for m, t in record["terms"].items():
        print(
            f"{m} ({t['atom_type']}): C4 {t['parameters']['c4_kJ_nm4_per_mol']:.6g} kJ nm^4/mol gives cluster E_ads "
            f"{t['cluster_e_ads_eV']:.4f} eV (target {t['target_eV']} eV; uncalibrated {t['uncalibrated_cluster_e_ads_eV']:.4f} eV), "
            f"M-O {t['o_metal_distance_nm']:.3f} nm, {t['n_starts']} starts, {t['wall_s']:.0f} s"
        )


def cmd_export(args):
    from spemd.forcefields import export

    fn = {"gromacs": export.export_gromacs, "amber": export.export_amber}[args.format]
    fn(Path(args.params), Path(args.out))


def _device_claim(platform_cfg: dict):
    """Hold one GPU (workstation pinning, pipeline.gpus) unless the run is CPU-only."""
    from contextlib import nullcontext

    from spemd.pipeline.gpus import claim_gpu

    if platform_cfg.get("name", "auto") in ("CPU", "Reference"):
        return nullcontext()
    return claim_gpu()


def cmd_minimise(args):
    config = _config(args, ("protocol",))
    with _device_claim(config.get("platform", {})):
        from spemd.pipeline.engine import minimise  # imports OpenMM: only after the claim pinned the GPU

        minimise(Path(args.params), config["protocol"], config.get("platform", {}), Path(args.out))


def _stage(config: dict, name: str) -> dict:
    stages = config["protocol"]["stages"]
    for stage in stages:
        if stage["name"] == name:
            return stage
    raise ConfigError(f"--stage: {name!r} is not a protocol stage; allowed values: {', '.join(s['name'] for s in stages)}")


def resolve_stage_temperature(stage: dict, run_temperature_K: float) -> dict:
    """Replace the word "run" in a stage's temperature (or ramp) by the run's temperature."""
    value = stage.get("temperature_K", "run")
    if isinstance(value, list):
        value = [run_temperature_K if v == "run" else v for v in value]
    elif value == "run":
        value = run_temperature_K
    return {**stage, "temperature_K": value}


def cmd_md(args):
    config = _config(args, ("protocol",))
    stage = resolve_stage_temperature(_stage(config, args.stage), args.temperature)
    try:
        with _device_claim(config.get("platform", {})):
            from spemd.pipeline.engine import run_stage  # imports OpenMM: only after the claim pinned the GPU

            run_stage(
                Path(args.params),
                stage,
                config["protocol"],
                config.get("platform", {}),
                temperature_K=args.temperature,
                seed=replica_seed(config, args.replica),
                start_state=Path(args.start),
                out_dir=Path(args.out),
                max_wall_seconds=args.max_wall_seconds,
            )
    except StageIncomplete as exc:
        print(f"spemd md: {exc}", file=sys.stderr)
        return EXIT_RERUN_TO_CONTINUE
    return 0


def cmd_analyse_run(args):
    from spemd.analysis.production import analyse_production
    from spemd.pipeline.protocol import forcefield_hashes

    config = _config(args)
    ff_path = Path(args.params) / "forcefield.json"
    if not ff_path.is_file():
        raise InputError(f"--params {args.params}: {ff_path.name} missing; give the params folder of `spemd parametrise`")
    try:
        ff = json.loads(ff_path.read_text())
        charge_scale = float(ff["charge_scale"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{ff_path}: no usable charge_scale ({type(exc).__name__}: {exc}); rerun `spemd parametrise`") from None
    analyse_production(
        topology=Path(args.params) / "topology.pdb",
        trajectory=Path(args.production) / "trajectory.dcd",
        out_dir=Path(args.out),
        analysis_cfg=config.get("analysis", {}),
        charge_scale=charge_scale,
        temperature_K=args.temperature,
        provenance_extra={"system": args.system, "replica": args.replica, "temperature_K": args.temperature,
                          "forcefield_files": forcefield_hashes(ff)},
    )


def cmd_summarise(args):
    from spemd.analysis.summary import summarise

    summarise([Path(p) for p in args.transport], Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spemd", description=__doc__.splitlines()[0])
    # the installed package's version, the one every provenance block records
    parser.add_argument("--version", action="version", version=f"spemd {metadata.version('spemd')}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate a config file and exit")
    p.add_argument("--config", required=True, help="workflow YAML config to check against the schema")
    p.add_argument("--remote", action="store_true",
                   help="the jobs run on other machines (a cluster profile): do not check that platform.name exists here")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("build", help="build one system's box (box.pdb, composition.json)")
    _add_config_args(p)
    p.add_argument("--system", required=True, help="system name, a key of the config's systems section")
    p.add_argument("--replica", type=int, default=0,
                   help="replica index; the box's seed is derived from it (default %(default)s)")
    p.add_argument("--out", required=True, help="output folder (box.pdb, composition.json)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("parametrise", help="turn box.pdb into an OpenMM System (system.xml, topology.pdb, forcefield.json)")
    _add_config_args(p)
    p.add_argument("--box", required=True, help="box.pdb from `spemd build`")
    p.add_argument("--out", required=True, help="output folder (system.xml, topology.pdb, forcefield.json)")
    p.add_argument("--calibration", help="calibration.json from `spemd calibrate`: its fitted metal-O(TFSI) pairs override forcefield.metal_o_tfsi")
    p.set_defaults(func=cmd_parametrise)

    p = sub.add_parser("calibrate", help="fit the metal-O(TFSI) site term (12-6-4 C4) of each paddlewheel cluster (Fe2, Ni2, FeNi) to its target adsorption energy")
    _add_config_args(p)
    p.add_argument("--metal", nargs="*", help="cluster models to fit: Fe, Ni, FeNi (default: all three)")
    p.add_argument("--out", required=True, help="output folder (calibration.json)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("export", help="export a parametrised system to GROMACS or Amber files")
    p.add_argument("--params", required=True, help="params folder from `spemd parametrise`")
    p.add_argument("--format", required=True, choices=["gromacs", "amber"], help="output format")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("minimise", help="energy-minimise a parametrised system")
    _add_config_args(p)
    p.add_argument("--params", required=True, help="params folder from `spemd parametrise`")
    p.add_argument("--out", required=True, help="output folder (state.xml, done.json)")
    p.set_defaults(func=cmd_minimise)

    p = sub.add_parser("md", help="run (or resume) one MD stage")
    _add_config_args(p)
    p.add_argument("--params", required=True, help="params folder from `spemd parametrise`")
    p.add_argument("--stage", required=True, help="stage name, one of protocol.stages")
    p.add_argument("--temperature", type=float, required=True, help="run temperature (K)")
    p.add_argument("--replica", type=int, default=0,
                   help="replica index; the stage's velocity seed is derived from it (default %(default)s)")
    p.add_argument("--start", required=True, help="state.xml of the previous stage (or of minimise)")
    p.add_argument("--out", required=True, help="stage folder (trajectory.dcd, state.csv, checkpoint, done.json)")
    p.add_argument("--max-wall-seconds", type=float, default=None,
                   help="stop cleanly (exit 75) before this wall time; default from SPEMD_MAX_WALL_SECONDS or Slurm")
    p.set_defaults(func=cmd_md)

    p = sub.add_parser("analyse-run", help="analyse a workflow run's production stage")
    _add_config_args(p)
    p.add_argument("--params", required=True, help="params folder from `spemd parametrise` (topology, charge scale)")
    p.add_argument("--production", required=True, help="md/<production stage> folder")
    p.add_argument("--temperature", type=float, required=True, help="run temperature (K)")
    p.add_argument("--system", required=True, help="system name, recorded in transport.json")
    p.add_argument("--replica", type=int, default=0, help="replica index, recorded in transport.json (default %(default)s)")
    p.add_argument("--out", required=True, help="analysis folder (transport.json, CSVs, figures/)")
    p.set_defaults(func=cmd_analyse_run)

    p = sub.add_parser("summarise", help="one table of all runs' transport.json")
    p.add_argument("--out", required=True, help="summary CSV to write")
    p.add_argument("transport", nargs="+", help="transport.json files of the runs")
    p.set_defaults(func=cmd_summarise)

    from spemd.analysis.cli import add_analyse_parser
    from spemd.analysis.inspection import add_inspect_parser
    from spemd.analysis.study import add_study_parser

    add_inspect_parser(sub)
    add_analyse_parser(sub)
    add_study_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        rc = args.func(args)
    except SpemdError as exc:
        print(f"spemd {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # read-only or full output folder, missing input...: the file and the reason
        where = exc.filename if exc.filename is not None else "?"
        print(f"spemd {args.command}: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
