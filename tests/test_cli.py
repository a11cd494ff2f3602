"""The command line as a whole: every (sub)command prints its help, bad usage exits non-zero."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from sigcell.cli import build_parser, main


def _command_paths(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _command_paths(sub, (*prefix, name))


COMMANDS = sorted(set(_command_paths(build_parser())))


def test_commands_are_registered():
    names = {path[0] for path in COMMANDS}
    assert {"prepare", "pretrain", "bench"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_help_of_every_command(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().out


def test_unknown_command_exits_non_zero():
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code != 0


def test_import_sigcell_stays_light():
    """`import sigcell` (the op) pulls in none of the heavy optional stacks."""
    code = (
        "import sys, sigcell; heavy = {'anndata', 'scanpy', 'transformers', 'matplotlib', 'jax', 'triton'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
