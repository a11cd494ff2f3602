"""``python -m sigcell.pretrained list | export RUN_DIR NAME``: list shipped models, export a trained run."""

from __future__ import annotations

import argparse
import sys

from sigcell import pretrained


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m sigcell.pretrained", description=__doc__)
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("list", help="known and exported models, with where they are")
    e = sub.add_parser("export", help="write a finished run as a shipped model (bf16 weights + vocab)")
    e.add_argument("run_dir", help="run folder of sigcell pretrain (its latest checkpoint), or a checkpoint")
    e.add_argument("name", help="model name, e.g. sigcell-small")
    e.add_argument("--root", default=None,
                   help=f"models folder (default: ${pretrained.ENV_VAR} or the package's folder)")
    e.add_argument("--encoder-only", action="store_true", help="leave out the pretraining heads")
    e.add_argument("--overwrite", action="store_true", help="replace an existing model of that name")
    args = parser.parse_args(argv)
    try:
        if args.action == "export":
            meta = pretrained.export(args.run_dir, args.name, out_root=args.root,
                                     encoder_only=args.encoder_only, overwrite=args.overwrite)
            where = pretrained.root() if args.root is None else args.root
            for f, info in meta["files"].items():
                print(f"  {f:<18} {info['bytes'] / 1e6:9.3f} MB  sha256 {info['sha256'][:16]}")
            print(f"exported {args.name} (step {meta['step']}, {meta['n_parameters']:,} parameters, "
                  f"{meta['vocab_genes']:,} genes) to {where}/{args.name}: "
                  f"{meta['total_bytes'] / 1e6:.2f} MB in all")
            return 0
        base = pretrained.root()
        print(f"models folder: {base}  (set {pretrained.ENV_VAR} to move it)")
        for name in pretrained.available():
            try:
                folder = pretrained.model_dir(name)
                state = f"present ({sum(f.stat().st_size for f in folder.iterdir()) / 1e6:.1f} MB)"
            except FileNotFoundError:
                state = "not shipped in this installation"
            print(f"{name:<20} {state:<36} {pretrained.MODELS.get(name, '')}")
        return 0
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"sigcell.pretrained {args.action}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
