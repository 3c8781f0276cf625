"""Load and validate the workflow configuration.

The schema (``pipeline/schema/config.schema.yaml``) is the single source of truth: it carries a
description per key, the defaults and the allowed values. Validation happens before anything is
written; the first error is reported as one line naming the key path and the allowed values.
Cross-key rules that JSON Schema cannot express neatly (time step vs HMR, chains vs MOF loading) are
checked in :func:`check_consistency`.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from pipeline.errors import ConfigError

SCHEMA_RESOURCE = "schema/config.schema.yaml"
MAX_TIMESTEP_WITHOUT_HMR_FS = 2.5


def schema_path() -> Path:
    return Path(str(resources.files("pipeline").joinpath(SCHEMA_RESOURCE)))


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
    schema = load_schema()
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
