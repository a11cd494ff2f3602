"""GPU check of sigcell's Hugging Face transformers integration: the same BERT on CUDA and on CPU.

Builds a Geneformer-shaped ``BertForMaskedLM`` (random weights, offline), switches it to
``attn_implementation="sigmoid"`` and runs a right-padded batch (and the same sequences packed) forward
and backward. The reference is the CPU plain-PyTorch path in float64; the printed relative errors are
``||x - ref|| / ||ref||``. For 16-bit runs the CPU path in the same dtype is the yardstick: the CUDA
error should be at most about 2x (outputs) / 3x (gradients) of it.

Run on the GPU machine (needs only torch, triton and transformers; no download)::

    PYTHONPATH=src python benchmarks/hf_gpu_check.py
    PYTHONPATH=src python benchmarks/hf_gpu_check.py --size 12L --lengths 2048 1500 700 64

Results are also written as JSON (card, dtype, shapes) to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

SIZES = {
    # Geneformer-6L / -12L shapes (hidden, layers, heads, intermediate); vocabulary ~25k gene tokens.
    "6L": dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=512),
    "12L": dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, intermediate_size=1024),
}
VOCAB = 25_426


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().double().cpu(), ref.detach().double().cpu()
    return float((x - ref).norm() / ref.norm().clamp_min(1e-300))


def batch(lengths: list[int], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(3, VOCAB, (len(lengths), width), generator=gen)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = 0
    # Masked-LM labels on ~15 % of the valid tokens.
    labels = ids.masked_fill((torch.rand(ids.shape, generator=gen) > 0.15) | (mask == 0), -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def packed(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | int]:
    """The padded batch as one packed row with cu_seq_lens (what DataCollatorWithFlattening produces)."""
    keep = inputs["attention_mask"].bool()
    lengths = keep.sum(1)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    pos = torch.cat([torch.arange(int(n)) for n in lengths])
    return {
        "input_ids": inputs["input_ids"][keep][None],
        "labels": inputs["labels"][keep][None],
        "position_ids": pos[None],
        "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
        "max_length_q": int(lengths.max()), "max_length_k": int(lengths.max()),
    }


def run(model, inputs: dict, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Forward + backward; returns hidden states, loss and the first layer's query-weight gradient."""
    model = copy.deepcopy(model).to(device=device, dtype=dtype).train()
    model.zero_grad(set_to_none=True)
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    out = model(**moved, output_hidden_states=True)
    out.loss.backward()
    attn = model.bert.encoder.layer[0].attention.self
    return {
        "hidden": out.hidden_states[-1].detach().float().cpu(),
        "loss": out.loss.detach().float().cpu(),
        "grad_query": attn.query.weight.grad.detach().float().cpu(),
        "grad_embed": model.bert.embeddings.word_embeddings.weight.grad.detach().float().cpu(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="6L")
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 400, 237, 64],
                        help="valid tokens per sequence (right-padded to the longest)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda", help="device under test (cpu only to try the script)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args()

    try:
        import transformers
    except ImportError:
        print("hf_gpu_check: transformers is not installed on this machine, so the integration cannot be "
              "checked; install it with `pip install 'transformers>=5'` (or `pip install -e '.[hf]'`) "
              "and rerun")
        return 2
    if int(transformers.__version__.split(".")[0]) < 5:
        print(f"hf_gpu_check: needs transformers >= 5, found {transformers.__version__}; upgrade and rerun")
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("hf_gpu_check: no CUDA device visible; run this on the GPU machine")
        return 2

    from transformers import BertConfig, BertForMaskedLM

    from sigcell.integrations.transformers import register

    register("sigmoid")
    cfg = BertConfig(vocab_size=VOCAB, max_position_embeddings=max(2048, max(args.lengths)),
                     hidden_act="relu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     pad_token_id=0, **SIZES[args.size])
    torch.manual_seed(0)
    model = BertForMaskedLM(cfg)
    model.set_attn_implementation("sigmoid")
    inputs = batch(args.lengths, seed=0)
    keep = inputs["attention_mask"].bool()

    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"card: {card} | torch {torch.__version__} | transformers {transformers.__version__} | "
          f"BERT {args.size} {SIZES[args.size]} | lengths {args.lengths}")
    t0 = time.perf_counter()
    ref = run(model, inputs, "cpu", torch.float64)
    print(f"CPU float64 reference: {time.perf_counter() - t0:.1f} s")

    results = []
    header = f"{'run':34s} {'hidden':>9s} {'loss':>9s} {'dWq':>9s} {'dEmb':>9s}"
    print(header)
    print("-" * len(header))

    def report(label: str, got: dict, extra: dict) -> dict:
        # Valid tokens in order: the padded batch's rows, or the packed row (same order).
        hidden = got["hidden"][0] if extra.get("layout") == "packed" else got["hidden"][keep]
        errs = {
            "hidden": rel_err(hidden, ref["hidden"][keep]),
            "loss": rel_err(got["loss"], ref["loss"]),
            "grad_query": rel_err(got["grad_query"], ref["grad_query"]),
            "grad_embed": rel_err(got["grad_embed"], ref["grad_embed"]),
        }
        print(f"{label:34s} {errs['hidden']:9.2e} {errs['loss']:9.2e} {errs['grad_query']:9.2e} "
              f"{errs['grad_embed']:9.2e}")
        results.append({"run": label, **extra, "rel_err": errs})
        return errs

    worst = {}
    for name in args.dtypes:
        dtype = getattr(torch, name)
        cpu = report(f"cpu {name} padded", run(model, inputs, "cpu", dtype), {"device": "cpu", "dtype": name})
        dev = args.device
        gpu = report(f"{dev} {name} padded", run(model, inputs, dev, dtype), {"device": dev, "dtype": name})
        report(f"{dev} {name} packed (cu_seq_lens)", run(model, packed(inputs), dev, dtype),
               {"device": dev, "dtype": name, "layout": "packed"})
        worst[name] = {k: gpu[k] / max(cpu[k], 1e-12) for k in gpu}
    for name, ratios in worst.items():
        ratio_text = ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
        print(f"{name}: {args.device} error / cpu-{name} error: {ratio_text}")

    out = args.out or Path(__file__).parent / "results" / (
        "hf_gpu_check_" + card.replace(" ", "_").replace("/", "_") + f"_{args.size}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "what": "sigcell transformers integration: BertForMaskedLM, attn_implementation='sigmoid', vs CPU",
        "card": card, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "model": {"size": args.size, **SIZES[args.size], "vocab_size": VOCAB}, "lengths": args.lengths,
        "reference": "cpu float64 (plain PyTorch path)", "results": results,
    }
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, out)  # a crash leaves the old file or the new one, never half of one
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
