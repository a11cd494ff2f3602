"""``python -m sigcell.bench kernels|train ...``: the same commands as ``sigcell bench ...``.

Builds a parser from :mod:`sigcell.cli.bench` alone, so it runs where only torch and triton are installed
(the other command modules may import optional packages).
"""

from __future__ import annotations

import argparse
import sys

from sigcell.cli.bench import add_subcommands


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the benchmark, return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m sigcell.bench", description="sigcell benchmarks")
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    add_subcommands(sub)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"python -m sigcell.bench {args.benchmark}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
