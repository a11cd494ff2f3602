"""The ``sigcell`` command line: parse arguments, call the library, turn errors into messages.

Each area of the library contributes its subcommands from its own module in this package
(``register(subparsers)`` adds the parsers; each parser sets ``func`` to a callable taking the
parsed namespace and returning an exit code). No logic lives here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

# One module per area; each defines ``register(subparsers) -> None``.
COMMAND_MODULES: tuple[str, ...] = ("sigcell.cli.bench", "sigcell.cli.train", "sigcell.cli.data",
                                   "sigcell.cli.eval", "sigcell.cli.analysis")


class CliError(Exception):
    """An error whose message is shown to the user as-is (no traceback), with exit code 2."""


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that states each option's default, unless the help already speaks of it (or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or "%(default)" in text or default in (None, False, argparse.SUPPRESS)
                or not action.option_strings or (isinstance(default, list) and not default)):
            return text
        return f"{text} (default: %(default)s)"


def _state_defaults(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _DefaultsFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _state_defaults(sub)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="sigcell",
        description="Sigmoid attention for single-cell foundation models.",
    )
    from sigcell import __version__

    parser.add_argument("--version", action="version", version=f"sigcell {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    _state_defaults(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sigcell`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            # a library warning reaches a CLI user as one line, without a Python file path / source line
            def show(message, category, filename, lineno, file=None, line=None):
                print(f"sigcell {args.command}: warning: {message}", file=sys.stderr, flush=True)

            warnings.showwarning = show
            return int(args.func(args) or 0)
    except (CliError, ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"sigcell {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # permissions, a folder where a file is expected, a truncated .h5ad, ...
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"sigcell {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sigcell {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
