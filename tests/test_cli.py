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


def test_model_and_training_import_without_the_data_stack():
    """The GPU-side training path (model, trainer, batches) needs neither scipy nor anndata."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in {'scipy', 'anndata', 'scanpy', 'h5py', 'matplotlib', 'rich'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import sigcell.model, sigcell.train\n"
        "from sigcell.data import CellBatch, make_dataloader\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
