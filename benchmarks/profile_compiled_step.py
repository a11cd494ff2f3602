"""Where the host time of a compiled training step goes: cProfile over a few steps of torch.compile(model).

Usage: PYTHONPATH=src python3 benchmarks/profile_compiled_step.py [--preset base] [--attention sigmoid]
       [--layout padded] [--l 2048] [--steps 5] [--top 30]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats

import torch

from sigcell.bench.train import load_model_config, make_batches
from sigcell.bench.train_cases import build_train_cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--attention", default="sigmoid")
    ap.add_argument("--layout", default="padded")
    ap.add_argument("--l", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    from sigcell.model import MaskedExpressionModel

    config = load_model_config(args.preset, attention=args.attention)
    case = build_train_cases((args.l,), (0.0,), [], tokens=16384)[0]
    batch = make_batches(case, config)[args.layout].to("cuda")
    model = MaskedExpressionModel(config).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    run = torch.compile(model)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = run(batch)
        (out.loss_sum.float() / out.n_masked.clamp(min=1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.steps):
        step()
    prof.disable()
    torch.cuda.synchronize()
    for order in ("tottime", "cumulative"):
        stream = io.StringIO()
        stats = pstats.Stats(prof, stream=stream)
        stats.sort_stats(order).print_stats(args.top)
        per_step = stats.total_tt / args.steps * 1e3
        print(f"===== {args.attention} {args.layout} L{args.l}: {per_step:.1f} ms of Python per step "
              f"(profiled), by {order}")
        print("\n".join(line for line in stream.getvalue().splitlines() if line.strip()))


if __name__ == "__main__":
    main()
