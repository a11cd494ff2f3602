"""GPU check of the end-to-end path (issue 16): graph breaks, CUDA-graph capture, host cost per op call.

1. ``torch._dynamo.explain`` of a training forward (MaskedExpressionModel, bf16 autocast) of each
   attention and layout: graphs and graph breaks (the target is one graph, no break).
2. Manual CUDA-graph capture of a whole training step (forward, loss, backward, fused capturable AdamW)
   of the sigmoid model, padded and packed: the replayed steps' losses against the eager steps' from the
   same weights, and the time per step of both.
3. Host time per eager call of the op (forward; backward) on shapes small enough that the GPU idles:
   the time to issue N calls back to back over N.

Usage: PYTHONPATH=src python3 benchmarks/compile_check.py [--preset base] [--out DIR]
Writes ``compile_check-<card>.json`` under --out and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from sigcell.bench.train import load_model_config, make_batches
from sigcell.bench.train_cases import build_train_cases


def _batches(model_config, length: int, tokens: int, padding: float):
    case = build_train_cases((length,), (padding,), [], tokens=tokens)[0]
    return case, make_batches(case, model_config)


def explain_forward(preset: str, attention: str, batch) -> dict:
    from sigcell.model import MaskedExpressionModel

    model = MaskedExpressionModel(load_model_config(preset, attention=attention)).cuda()
    torch._dynamo.reset()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ex = torch._dynamo.explain(model)(batch)
    return {"graphs": ex.graph_count, "graph_breaks": ex.graph_break_count,
            "reasons": sorted({r.reason.strip().splitlines()[0][:200] for r in ex.break_reasons})}


def _step_fn(model, optimizer, batch):
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(batch)
        loss = out.loss_sum.float() / out.n_masked.clamp(min=1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # graph replays need the .grad tensors to stay
        return loss.detach()

    return step


def _timed(fn, n: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3


def cuda_graph_step(preset: str, batch, steps: int = 4) -> dict:
    """Eager steps vs replays of one captured step, from the same initial weights."""
    from sigcell.model import MaskedExpressionModel

    config = load_model_config(preset, attention="sigmoid")

    def fresh():
        torch.manual_seed(0)
        model = MaskedExpressionModel(config).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True, capturable=True)
        return model, opt

    model, opt = fresh()
    step = _step_fn(model, opt, batch)
    eager = [float(step()) for _ in range(steps)]
    eager_ms = _timed(step, 5)

    model, opt = fresh()
    step = _step_fn(model, opt, batch)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up on a side stream (allocations, autotuning) as torch asks
        warm = [float(step())]
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured_loss = step()
    replayed = []
    for _ in range(steps - 1):
        graph.replay()
        replayed.append(float(captured_loss))
    graph_ms = _timed(graph.replay, 5)
    got = warm + replayed
    worst = max(abs(a - b) / max(abs(a), 1e-6) for a, b in zip(eager, got, strict=True))
    return {"eager_losses": eager, "graph_losses": got, "max_rel_diff": worst, "eager_ms": eager_ms,
            "graph_ms": graph_ms}


def host_us_per_call() -> list[dict]:
    from sigcell import sigmoid_attn_func, sigmoid_attn_varlen_func
    from sigcell.ops import cu_seqlens_from_lengths

    rows = []
    b, length, heads, dim = 2, 128, 4, 64
    for name in ("dense", "padded", "packed"):
        gen = torch.Generator(device="cuda").manual_seed(0)
        shape = (b * length, heads, dim) if name == "packed" else (b, length, heads, dim)
        q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_()
                   for _ in range(3))
        lens = torch.tensor([length, length - 17], dtype=torch.int32, device="cuda")
        if name == "packed":
            lens = torch.tensor([length, length], dtype=torch.int32, device="cuda")
            cu = cu_seqlens_from_lengths(lens)
            fwd = lambda q=q, k=k, v=v, cu=cu: sigmoid_attn_varlen_func(q, k, v, cu, cu, length, length)
        elif name == "padded":
            fwd = lambda q=q, k=k, v=v, n=lens: sigmoid_attn_func(q, k, v, seq_lens_q=n, seq_lens_k=n)
        else:
            fwd = lambda q=q, k=k, v=v: sigmoid_attn_func(q, k, v)
        out = fwd()
        grad = torch.randn_like(out)
        out.backward(grad)
        n = 300
        for _ in range(20):
            fwd()
        torch.cuda.synchronize()
        fwd_times = []
        for _ in range(5):
            t0 = time.perf_counter()
            outs = [fwd() for _ in range(n)]
            fwd_times.append((time.perf_counter() - t0) / n * 1e6)
            torch.cuda.synchronize()
        bwd_times = []
        for _ in range(5):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for o in outs[:100]:
                o.backward(grad)
            bwd_times.append((time.perf_counter() - t0) / 100 * 1e6)
            outs = [fwd() for _ in range(100)]
        torch.cuda.synchronize()
        rows.append({"layout": name, "shape": list(shape), "fwd_host_us": statistics.median(fwd_times),
                     "bwd_host_us": statistics.median(bwd_times)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    args = ap.parse_args()
    card = torch.cuda.get_device_name()
    result: dict = {"card": card, "torch": torch.__version__, "preset": args.preset}
    config = load_model_config(args.preset)
    _, batches = _batches(config, 2048, 16384, 0.25)
    batches = {k: v.to("cuda") for k, v in batches.items()}
    result["explain"] = {f"{att}/{lay}": explain_forward(args.preset, att, batches[lay])
                         for att in ("sigmoid", "softmax") for lay in ("padded", "packed")}
    for key, ex in result["explain"].items():
        print(f"explain {key:<16} graphs {ex['graphs']} breaks {ex['graph_breaks']} {ex['reasons'][:3]}")
    result["cuda_graph"] = {}
    for lay in ("padded", "packed"):
        try:
            result["cuda_graph"][lay] = r = cuda_graph_step(args.preset, batches[lay])
            print(f"cuda graph {lay:<7} eager {r['eager_ms']:.2f} ms/step, "
                  f"graph {r['graph_ms']:.2f} ms/step, "
                  f"losses max rel diff {r['max_rel_diff']:.2e}")
        except Exception as err:  # recorded: capture failing is a finding
            result["cuda_graph"][lay] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            print(f"cuda graph {lay}: FAILED {result['cuda_graph'][lay]['error']}")
    result["host_us"] = host_us_per_call()
    for r in result["host_us"]:
        print(f"host per call {r['layout']:<7} fwd {r['fwd_host_us']:.1f} us, bwd {r['bwd_host_us']:.1f} us")
    out = Path(args.out) / f"compile_check-{card.replace(' ', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
