"""The project's exception types.

Every message is one line that names the offending key or file and, where there is a closed set, the
allowed values. The command-line interface prints the message (not a traceback) and exits non-zero.
"""


class SpemdError(Exception):
    """Base class: anything the user can fix by changing an input."""


class ConfigError(SpemdError):
    """A configuration value is missing, of the wrong type or out of range."""


class InputError(SpemdError):
    """An input file or argument is unusable (missing file, empty selection, mismatched sizes...)."""


class BuildError(SpemdError):
    """A box cannot be built as requested (composition unreachable, box too small, packing failed)."""


class SimulationError(SpemdError):
    """A simulation stage failed (blow-up, unavailable platform, corrupt checkpoint)."""


class StageIncomplete(SimulationError):
    """A stage stopped early (wall budget or stop signal) with a checkpoint; a rerun continues it (exit 75).

    Defined here, not in the engine, so the CLI can catch it without importing OpenMM before the GPU claim.
    """


def one_of(key: str, value, allowed) -> str:
    """Standard wording for a value outside a closed set."""
    allowed_text = ", ".join(repr(a) for a in allowed)
    return f"{key}: {value!r} is not allowed; allowed values: {allowed_text}"
