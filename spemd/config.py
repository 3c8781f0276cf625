"""Load and validate the workflow configuration.

The schema (``spemd/schema/config.schema.yaml``) is the single source of truth: it carries a
description per key, the defaults and the allowed values. Validation happens before anything is
written; the first error is reported as one line naming the key path and the allowed values.
Cross-key rules that JSON Schema cannot express neatly (time step vs HMR, chains vs MOF loading) are
checked in :func:`check_consistency`.
"""

from __future__ import annotations

import copy
import math
import re
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from spemd.errors import ConfigError

SCHEMA_RESOURCE = "schema/config.schema.yaml"
MAX_TIMESTEP_WITHOUT_HMR_FS = 2.5
#: lightest repartitioned hydrogen (amu) accepted above MAX_TIMESTEP_WITHOUT_HMR_FS; 1.008 is no HMR at all
MIN_HMR_HYDROGEN_AMU = 1.5
#: smallest non-zero MOF loading (wt%): below it the builder would plan millions of chains around one slab
MIN_MOF_WT_PERCENT = 1.0
#: stage names that would overwrite another step's folder (md/minimise is the minimisation's)
RESERVED_STAGE_NAMES = ("minimise",)

# JSON Schema counts 2.0 as an integer; the code downstream (range(), counts) does not, so reject floats.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, v: isinstance(v, int) and not isinstance(v, bool)
    ),
)


def schema_path() -> Path:
    return Path(str(resources.files("spemd").joinpath(SCHEMA_RESOURCE)))


def load_schema() -> dict:
    return yaml.safe_load(schema_path().read_text())


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<config>"


def _message(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted((error.schema.get("properties") or {}).keys())
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        where = f"{key}." if key != "<config>" else ""
        return f"unknown key {where}{extra[0] if extra else '?'}; allowed keys here: {', '.join(allowed)}"
    if v == "enum":
        return f"{key}: {error.instance!r} is not allowed; allowed values: {', '.join(map(repr, error.validator_value))}"
    if v == "required":
        return f"{key}: {error.message}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"{key}: {error.instance!r} is out of range; must be {op} {error.validator_value}"
    if v == "type":
        if error.validator_value == "integer" and isinstance(error.instance, float) and error.instance.is_integer():
            return (f"{key}: {error.instance!r} is not an integer; allowed values: whole numbers without a "
                    f"decimal point (e.g. {int(error.instance)})")
        return f"{key}: {error.instance!r} has the wrong type; expected {error.validator_value}"
    if v == "uniqueItems":
        return f"{key}: {error.instance!r} repeats a value; allowed values: distinct items"
    if v == "pattern" or v == "propertyNames":
        return f"{key}: {error.message}"
    return f"{key}: {error.message}"


def _normalise_shorthands(config: dict) -> dict:
    """Accept ``platform: CUDA`` (e.g. from ``snakemake --config platform=CUDA``) for ``platform: {name: CUDA}``."""
    if isinstance(config.get("platform"), str):
        config = {**config, "platform": {"name": config["platform"]}}
    return config


def _coerce_strings(instance, schema):
    """Turn number-like and boolean-like strings into numbers/booleans where the schema expects them.

    ``snakemake --config key=value`` parses nested values with YAML's BaseLoader, which keeps every
    scalar a string (``temperatures_K=[300]`` arrives as ``['300']``).
    """
    types = schema.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if isinstance(instance, str):
        if types & {"number", "integer"}:
            for parse in (int, float):
                try:
                    return parse(instance)
                except ValueError:
                    pass
            return instance
        if "boolean" in types and instance.lower() in ("true", "false"):
            return instance.lower() == "true"
        if "oneOf" in schema:
            for option in schema["oneOf"]:
                coerced = _coerce_strings(instance, option)
                if coerced is not instance:
                    return coerced
        return instance
    if isinstance(instance, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        patterns = schema.get("patternProperties") or {}
        out = {}
        for key, value in instance.items():
            sub = props.get(key)
            if sub is None:
                sub = next((v for pat, v in patterns.items() if re.match(pat, str(key))), None)
            if sub is None and isinstance(extra, dict):
                sub = extra
            out[key] = _coerce_strings(value, sub) if isinstance(sub, dict) else value
        return out
    if isinstance(instance, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [_coerce_strings(v, items) for v in instance]
        if "oneOf" in schema:
            for option in schema["oneOf"]:
                if option.get("type") == "array":
                    return _coerce_strings(instance, option)
    return instance


def validate_sections(partial: dict) -> dict:
    """Validate only the top-level sections present in `partial` (used by single workflow steps).

    Each rule passes the sections it needs (e.g. ``{"forcefield": {...}}``); a change to an unrelated
    section then does not invalidate that rule's outputs.
    """
    if not isinstance(partial, dict):
        raise ConfigError(f"<config>: expected a mapping of keys, got {type(partial).__name__}")
    partial = _normalise_shorthands(partial)
    schema = load_schema()
    partial = _coerce_strings(partial, schema)
    properties = schema["properties"]
    out = {}
    for name, value in partial.items():
        if name not in properties:
            raise ConfigError(f"unknown key {name}; allowed keys here: {', '.join(sorted(properties))}")
        sub = {"type": "object", "properties": {name: properties[name]}, "additionalProperties": False}
        _check_finite(value, name)
        errors = list(_Validator(sub).iter_errors({name: value}))
        if errors:
            raise ConfigError(_message(jsonschema.exceptions.best_match(errors)))
        out[name] = _fill_defaults(copy.deepcopy({name: value}), sub)[name]
    check_consistency(out)
    return out


def _fill_defaults(instance, schema):
    """Insert schema defaults for missing keys (recursively, into objects and array items)."""
    if isinstance(instance, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in instance and "default" in sub:
                instance[name] = copy.deepcopy(sub["default"])
            if name in instance:
                _fill_defaults(instance[name], sub)
        extra_schema = schema.get("additionalProperties")
        if isinstance(extra_schema, dict):
            known = set(schema.get("properties") or {})
            for name, value in instance.items():
                if name not in known:
                    _fill_defaults(value, extra_schema)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill_defaults(item, schema["items"])
    return instance


def validate_config(config: dict, *, fill_defaults: bool = True) -> dict:
    """Validate `config` against the schema; return a copy with defaults filled in.

    Raises ConfigError with one line naming the first bad key.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"<config>: expected a mapping of keys, got {type(config).__name__}")
    config = _normalise_shorthands(config)
    schema = load_schema()
    config = _coerce_strings(config, schema)
    _check_finite(config, "")
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), str(list(e.absolute_path))))
    if errors:
        # the deepest, most specific error of the first failing branch
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_message(best))
    config = copy.deepcopy(config)
    if fill_defaults:
        _fill_defaults(config, schema)
    check_consistency(config)
    return config


def _check_finite(instance, key: str) -> None:
    """NaN and inf pass every JSON Schema bound (all comparisons with NaN are false): reject them first."""
    if isinstance(instance, float) and not math.isfinite(instance):
        raise ConfigError(f"{key or '<config>'}: {instance!r} is not allowed; allowed values: finite numbers")
    if isinstance(instance, dict):
        for k, v in instance.items():
            _check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(instance, list):
        for i, v in enumerate(instance):
            _check_finite(v, f"{key}.{i}")


def _whole_steps(config_key: str, value_ps, dt_fs: float) -> None:
    exact = float(value_ps) * 1000.0 / dt_fs
    if abs(exact - round(exact)) > 1e-6 * max(1.0, exact):
        raise ConfigError(
            f"{config_key}: {value_ps} ps is not a whole number of protocol.timestep_fs ({dt_fs} fs) steps; "
            f"allowed values: multiples of {dt_fs / 1000.0:g} ps"
        )


def check_consistency(config: dict) -> None:
    """Rules between keys."""
    protocol = config.get("protocol", {})
    ff = config.get("forcefield", {})
    dt = protocol.get("timestep_fs", 4.0)
    if dt > MAX_TIMESTEP_WITHOUT_HMR_FS:
        h_mass = ff.get("hydrogen_mass_amu", 1.5) if "forcefield" in config else 1.5
        if h_mass is None:
            raise ConfigError(
                f"protocol.timestep_fs: {dt} fs needs hydrogen mass repartitioning; set "
                f"forcefield.hydrogen_mass_amu (e.g. 1.5) or use a step <= {MAX_TIMESTEP_WITHOUT_HMR_FS} fs"
            )
        if h_mass < MIN_HMR_HYDROGEN_AMU:
            raise ConfigError(
                f"forcefield.hydrogen_mass_amu: {h_mass!r} amu is too light for protocol.timestep_fs {dt} fs; "
                f"allowed values: >= {MIN_HMR_HYDROGEN_AMU} amu, or a time step <= {MAX_TIMESTEP_WITHOUT_HMR_FS} fs"
            )
    for name, spec in config.get("systems", {}).items():
        wt = spec.get("mof_wt_percent", 0)
        if wt == 0 and "chains" not in spec:
            raise ConfigError(f"systems.{name}.chains: required when mof_wt_percent is 0")
        if 0 < wt < MIN_MOF_WT_PERCENT:
            raise ConfigError(
                f"systems.{name}.mof_wt_percent: {wt!r} would need an enormous box of chains around one slab; "
                f"allowed values: 0 (no MOF) or {MIN_MOF_WT_PERCENT:g} to < 50"
            )
    temps = config.get("temperatures_K", [])
    dupes = sorted({t for t in temps if temps.count(t) > 1})
    if dupes:
        raise ConfigError(f"temperatures_K: {dupes[0]!r} appears more than once; allowed values: distinct temperatures")
    stages = protocol.get("stages", [])
    names = [s["name"] for s in stages]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"protocol.stages: stage name {dupes[0]!r} appears more than once")
    for i, stage in enumerate(stages):
        if stage["name"] in RESERVED_STAGE_NAMES:
            raise ConfigError(
                f"protocol.stages.{i}.name: {stage['name']!r} is reserved (the minimisation's folder md/minimise); "
                f"allowed values: any other name matching ^[A-Za-z0-9_-]+$"
            )
        key = f"protocol.stages.{i}"
        for field in ("time_ps", "max_time_ps", "trajectory_interval_ps", "state_interval_ps"):
            if stage.get(field) is not None:
                _whole_steps(f"{key}.{field}", stage[field], dt)
    analysis = config.get("analysis", {})
    start, end = analysis.get("msd_fit_start_fraction", 0.1), analysis.get("msd_fit_end_fraction", 0.5)
    if start >= end:
        raise ConfigError(
            f"analysis.msd_fit_start_fraction: {start!r} is not below analysis.msd_fit_end_fraction ({end!r}); "
            "allowed values: 0 <= start < end <= 1"
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _unique_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise ConfigError(f"{loader.name}: key {key!r} is given twice (lines {seen[key]} and {line}); keep one")
        seen.setdefault(key, line)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path):
    """The YAML document of a file; ConfigError (one line, naming the file) for unreadable text, bad YAML
    or a key given twice in one mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    finally:
        loader.dispose()


def load_config(path) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    return validate_config(read_yaml(path) or {})


def replica_seed(config: dict, replica: int) -> int:
    """Seed of one replica: independent packings and velocities per replica."""
    return int(config.get("seed", 2025)) + 1000 * int(replica)
