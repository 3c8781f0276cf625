"""Every option of every `spemd` subcommand has help text, and an option with a default names it."""

import argparse

from spemd.pipeline.cli import build_parser


def _walk(parser, path):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def test_every_option_has_help_naming_its_default():
    missing, no_default = [], []
    for path, action in _walk(build_parser(), "spemd"):
        label = f"{path} {'/'.join(action.option_strings) or action.dest}"
        if not (action.help and action.help.strip()) or action.help == argparse.SUPPRESS:
            missing.append(label)
        elif (not action.required and action.default not in (None, False, argparse.SUPPRESS)
              and "default" not in action.help):
            no_default.append(label)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help does not name their default: {no_default}"
    # the walk reached the nested subcommands (analyse rdf/msd/conductivity) and every top-level one
    paths = {p for p, _ in _walk(build_parser(), "spemd")}
    assert {"spemd analyse rdf", "spemd analyse conductivity", "spemd inspect", "spemd md", "spemd study"} <= paths
