"""Load and validate the workflow configuration.

The schema (``spemd/schema/config.schema.yaml``) is the single source of truth: it carries a
description per key, the defaults and the allowed values. Validation happens before anything is
written; the first error is reported as one line naming the key path and the allowed values.
Cross-key rules that JSON Schema cannot express neatly (time step vs HMR, chains vs MOF loading) are
checked in :func:`check_consistency`.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from spemd.errors import ConfigError

SCHEMA_RESOURCE = "schema/config.schema.yaml"
MAX_TIMESTEP_WITHOUT_HMR_FS = 2.5


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
        return f"{key}: {error.instance!r} has the wrong type; expected {error.validator_value}"
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
        errors = list(jsonschema.Draft202012Validator(sub).iter_errors({name: value}))
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
    validator = jsonschema.Draft202012Validator(schema)
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


def check_consistency(config: dict) -> None:
    """Rules between keys."""
    protocol = config.get("protocol", {})
    ff = config.get("forcefield", {})
    dt = protocol.get("timestep_fs", 4.0)
    if dt > MAX_TIMESTEP_WITHOUT_HMR_FS and ff.get("hydrogen_mass_amu", 1.5) is None:
        raise ConfigError(
            f"protocol.timestep_fs: {dt} fs needs hydrogen mass repartitioning; set "
            f"forcefield.hydrogen_mass_amu (e.g. 1.5) or use a step <= {MAX_TIMESTEP_WITHOUT_HMR_FS} fs"
        )
    for name, spec in config.get("systems", {}).items():
        wt = spec.get("mof_wt_percent", 0)
        if wt == 0 and "chains" not in spec:
            raise ConfigError(f"systems.{name}.chains: required when mof_wt_percent is 0")
    calibration = config.get("calibration") or {}
    if calibration.get("enabled") and "FeNi" not in (calibration.get("targets_eV") or {}):
        users = [n for n, spec in config.get("systems", {}).items() if spec.get("mof_wt_percent", 0) > 0 and spec.get("mof_metal", "FeNi") == "FeNi"]
        if users:
            raise ConfigError(
                f"calibration.targets_eV.FeNi: required when calibration.enabled and a system uses mof_metal FeNi "
                f"({', '.join(users)}); the paper gives no Fe-Ni value, give one in eV (< 0)"
            )
    names = [s["name"] for s in protocol.get("stages", [])]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"protocol.stages: stage name {dupes[0]!r} appears more than once")


def load_config(path) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return validate_config(raw or {})


def replica_seed(config: dict, replica: int) -> int:
    """Seed of one replica: independent packings and velocities per replica."""
    return int(config.get("seed", 2025)) + 1000 * int(replica)
