"""GPU smoke test and first end-to-end timings of sigcell pretraining (needs CUDA).

    python benchmarks/train_smoke.py                      # checks + step times, JSON to benchmarks/results/
    python benchmarks/train_smoke.py --quick              # checks only
    # 2 GPUs vs 1 GPU at the same global batch (loss curves should agree to bf16 noise):
    python -m sigcell pretrain --config tiny --device cuda --out /tmp/g1 --steps 30 --grad-accum 2 \
        --no-progress
    torchrun --nproc_per_node=2 -m sigcell pretrain --config tiny --device cuda --out /tmp/g2 --steps 30 \
        --no-progress        # add --parallel fsdp for FSDP2

Checks: (1) padded and packed batches give the same encoder outputs in bf16, sigmoid and softmax
(softmax packed goes through torch's varlen flash path); (2) the tiny preset trains 30 steps with
finite, falling loss on CUDA for both attentions; (3) step time, tokens/s and peak memory of the base
model (d_model 512, 8 heads, 12 layers, AdamW, bf16 autocast) at a few lengths, sigmoid vs softmax,
packed vs padded.

This stays the quick smoke check. The proper end-to-end benchmark (every SDPA backend, torch varlen,
TritonSigmoid, padded batches, real cell-length mixes, the 16k-gene memory check, the issue's targets, JSON +
PNG with the card name) is ``sigcell bench train`` (``python -m sigcell.bench train --preset quick``);
see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from sigcell.model import MaskedExpressionModel, ModelConfig
from sigcell.ops import pack_padded
from sigcell.train import TrainConfig, pretrain
from sigcell.train.masking import mask_batch
from sigcell.train.optim import build_optimizer
from sigcell.train.synthetic import SyntheticCells


def check_layouts(device) -> dict:
    out = {}
    for attention in ("sigmoid", "softmax"):
        cfg = ModelConfig(vocab_size=5003, d_model=256, n_layers=2, n_heads=4, attention=attention)
        torch.manual_seed(0)
        model = MaskedExpressionModel(cfg).to(device)
        src = SyntheticCells(5003, "binned", 51, 100, 1000, 4, 0)
        padded, packed = src.batch(0, 6, packed=False).to(device), src.batch(0, 6, packed=True).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            a, b = model.encoder(padded), model.encoder(packed)
        diff = (pack_padded(a.hidden, a.layout.cu()).float() - b.hidden.float()).abs().max().item()
        out[attention] = diff
        print(f"padded vs packed, {attention}: max |diff| = {diff:.3e} (bf16)")
        assert diff < 0.1, f"{attention}: padded and packed differ by {diff}"
    return out


def check_training(device) -> dict:
    out = {}
    for attention in ("sigmoid", "softmax"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig.from_preset("tiny", {"out_dir": tmp, "device": "cuda", "steps": 30,
                                                   "model.attention": attention, "progress": False})
            result = pretrain(cfg)
            lines = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
            loss = [x["loss"] for x in lines if x["kind"] == "train"]
            out[attention] = {"first": loss[0], "last": loss[-1], "status": result.status}
            print(f"tiny on CUDA, {attention}: loss {loss[0]:.3f} -> {loss[-1]:.3f} ({result.status})")
            assert result.status == "completed" and loss[-1] < loss[0]
    return out


def time_steps(device, attention: str, packed: bool, length: int, cells: int, steps: int = 10) -> dict:
    cfg = ModelConfig(vocab_size=20003, d_model=512, n_layers=12, n_heads=8, attention=attention)
    torch.manual_seed(0)
    model = MaskedExpressionModel(cfg).to(device)
    opt = build_optimizer(model, TrainConfig().optim, device)
    src = SyntheticCells(20003, "binned", 51, length - 1, length - 1, 4, 0)
    batch = mask_batch(src.batch(0, cells, packed=packed), 0.15, "binned",
                       torch.Generator().manual_seed(0)).to(device)
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps + 3):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(batch)
        (out.loss_sum / out.n_masked).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    ms = sorted(times[3:])[len(times[3:]) // 2] * 1e3
    tokens = cells * length
    rec = {"attention": attention, "layout": "packed" if packed else "padded", "L": length, "cells": cells,
           "ms_per_step": ms, "tokens_per_s": tokens / ms * 1e3,
           "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30}
    print(f"{attention:8} {rec['layout']:7} L={length:5} x {cells:2}: {ms:7.1f} ms/step, "
          f"{rec['tokens_per_s']:9.0f} tok/s, {rec['peak_mem_gib']:.1f} GiB")
    return rec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("train_smoke.py needs a CUDA device")
    device = torch.device("cuda")
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": "bf16 autocast",
              "layouts": check_layouts(device), "training": check_training(device)}
    if not args.quick:
        report["steps"] = [time_steps(device, att, packed, length, cells)
                           for length, cells in ((2048, 8), (8192, 2))
                           for att in ("softmax", "sigmoid") for packed in (True, False)]
    out = Path(__file__).parent / "results" / "train_smoke.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
