"""GPU check: does ``torch.compile`` of a packed-batch training step work for both attentions?

Inductor's CUDA lowering failed on packed batches with "NotImplementedError: SliceView" for sigcell and
for torch's varlen softmax alike (`bench train`, 2026-12-04); the model now splits q / k / v on the head
dim of a view of the projection (model/attention.py). This runs one compiled forward + backward of the
tiny preset on a packed batch, with static and with dynamic shapes, and prints OK or the traceback's tail.

Usage (GPU machine): PYTHONPATH=src python3 benchmarks/packed_compile_check.py
"""

from __future__ import annotations

import traceback

import torch

from sigcell.bench.train import load_model_config, make_batches
from sigcell.bench.train_cases import build_train_cases
from sigcell.model import MaskedExpressionModel


def compiled_step(attention: str, dynamic: bool | None) -> bool:
    torch._dynamo.reset()
    config = load_model_config("tiny", attention=attention)
    case = build_train_cases((256,), (0.25,), [], tokens=2048)[0]
    batch = make_batches(case, config)["packed"].to("cuda")
    model = torch.compile(MaskedExpressionModel(config).cuda(), dynamic=dynamic)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(batch)
        out.loss_sum.float().backward()
        torch.cuda.synchronize()
    except Exception:
        print(f"FAIL {attention} dynamic={dynamic}\n{traceback.format_exc()[-6000:]}", flush=True)
        return False
    print(f"OK {attention} dynamic={dynamic}", flush=True)
    return True


def main() -> None:
    results = [compiled_step(a, d) for d in (None, True) for a in ("sigmoid", "softmax")]
    print(f"{sum(results)} of {len(results)} compiled packed steps ran")


if __name__ == "__main__":
    main()
