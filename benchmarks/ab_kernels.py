"""A/B timing of two versions of the Triton kernels module in one process, on the same GPU and inputs.

The interface imports its kernels from ``sigcell.ops.sigmoid_attn.kernels`` at call time, so swapping
that entry of ``sys.modules`` swaps the kernels (same launch configs, same host code). The versions run
interleaved (A B A B ...) so that clock and temperature drift hit both alike. Dense bf16, paper shapes
(B = 16384 / L, H = 2048 / D), fwd and bwd TFLOPS as in ``sigcell bench kernels``.

Usage: PYTHONPATH=src python3 benchmarks/ab_kernels.py [OLD_KERNELS.py] [--env-a VAR=VALUE ...]
       [--env-b VAR=VALUE ...] [--config-a KIND[@D]=M,N,... ...] [--config-b ...] [--d 64,128]
       [--l 1024,4096,16384] [--causal] [--rounds 3] [--out DIR]
(OLD_KERNELS.py: e.g. ``git show HEAD~1:src/sigcell/ops/sigmoid_attn/kernels.py > old.py``; without it
both versions use the current kernels and differ by their environment switches, e.g.
``--env-a SIGCELL_HOPPER_FWD=0``: the interface reads those at call time. ``--config-b
hopper_ws@256=64,64,3,2`` forces a launch config for one version, as ``sweep_configs.py`` does for one
shape: KIND is an ``interface.set_config_override`` kind, ``@D`` limits it to one head dim.)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

import torch
import triton

MODULE = "sigcell.ops.sigmoid_attn.kernels"


def load_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_env(items: list[str] | None) -> dict[str, str]:
    """``["A=1", "B=64,128"]`` -> ``{"A": "1", "B": "64,128"}``."""
    pairs = [item.split("=", 1) for item in items or []]
    bad = [item for item in pairs if len(item) != 2 or not item[0]]
    if bad:
        raise SystemExit(f"--env-a / --env-b take VAR=VALUE (repeat the flag for more), got {items!r}")
    return dict(pairs)


def parse_configs(items: list[str] | None) -> dict[tuple[str, int | None], tuple[int, ...]]:
    """``["hopper_ws@256=64,64,3,2"]`` -> ``{("hopper_ws", 256): (64, 64, 3, 2)}`` (no ``@D``: every dim)."""
    configs = {}
    for item in items or []:
        key, _, value = item.partition("=")
        kind, _, dim = key.partition("@")
        try:
            configs[(kind, int(dim) if dim else None)] = tuple(int(x) for x in value.split(","))
        except ValueError:
            raise SystemExit(f"--config-a / --config-b take KIND[@D]=M,N,..., got {item!r}") from None
        if not kind or not value:
            raise SystemExit(f"--config-a / --config-b take KIND[@D]=M,N,..., got {item!r}")
    return configs


def activate(module, env: dict[str, str], configs: dict | None = None, dim: int | None = None) -> None:
    """Make ``module`` the kernels the interface imports, under ``env`` (other switches as started) and
    the launch configs of ``configs`` that apply to head dim ``dim`` (other kinds: the defaults)."""
    from sigcell.ops.sigmoid_attn import interface

    sys.modules[MODULE] = module
    for name, value in env.items():
        os.environ[name] = value
    kinds = {kind for kind, _ in configs or {}}
    for kind in kinds:
        config = configs.get((kind, dim), configs.get((kind, None)))
        interface.set_config_override(kind, config)


def time_shape(
    versions: dict,
    envs: dict,
    configs: dict,
    d: int,
    L: int,
    causal: bool,
    rounds: int,
    modes: tuple[str, ...],
) -> list[dict]:
    """fwd and bwd TFLOPS of each version at one paper shape (median of interleaved rounds)."""
    from sigcell import sigmoid_attn_func

    B, H = max(1, 16384 // L), 2048 // d
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(B, L, H, d, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_()
        for _ in range(3)
    )
    do = torch.randn(B, L, H, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    flops = 4 * B * H * L * L * d * (0.5 if causal else 1.0)

    def fwd():
        return sigmoid_attn_func(q, k, v, causal=causal)

    times = {(ver, mode): [] for ver in versions for mode in modes}
    for _ in range(rounds):
        for ver, module in versions.items():
            activate(module, envs[ver], configs[ver], d)
            times[(ver, "fwd")].append(triton.testing.do_bench(fwd, warmup=25, rep=100))
            if "bwd" not in modes:
                continue
            out = fwd()

            def bwd(out=out):
                out.backward(do, retain_graph=True)

            times[(ver, "bwd")].append(triton.testing.do_bench(bwd, warmup=25, rep=100))
            q.grad = k.grad = v.grad = None
    activate(versions["B"], envs["B"], configs["B"], d)
    rows = []
    for mode, mult in (("fwd", 1.0), ("bwd", 2.5)):
        if mode not in modes:
            continue
        tf = {ver: mult * flops / statistics.median(times[(ver, mode)]) * 1e-9 for ver in versions}
        rows.append(dict(D=d, L=L, B=B, H=H, causal=causal, mode=mode, tflops_a=tf["A"], tflops_b=tf["B"]))
        ratio = tf["B"] / tf["A"]
        print(f"D{d} L{L} {mode}: A {tf['A']:.1f}  B {tf['B']:.1f} TFLOPS  (B/A {ratio:.3f})", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", nargs="?", help="the other kernels.py (version A; default: the current one)")
    ap.add_argument("--env-a", action="append", help="environment switch while version A runs: VAR=VALUE")
    ap.add_argument("--env-b", action="append", help="environment switch while version B runs: VAR=VALUE")
    for ver in ("a", "b"):
        help_text = f"launch config while version {ver.upper()} runs: KIND[@D]=M,N,..."
        ap.add_argument(f"--config-{ver}", action="append", help=help_text)
    ap.add_argument("--d", default="64,128")
    ap.add_argument("--l", default="1024,4096,16384")
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--modes", default="fwd,bwd", help="fwd,bwd or fwd (the forward alone)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved A/B rounds per shape (median kept)")
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    args = ap.parse_args()

    current = importlib.import_module(MODULE)
    versions = {"A": load_module(args.old, "sigcell_kernels_a") if args.old else current, "B": current}
    envs = {"A": parse_env(args.env_a), "B": parse_env(args.env_b)}
    configs = {"A": parse_configs(args.config_a), "B": parse_configs(args.config_b)}
    for kind in {kind for version in configs.values() for kind, _ in version}:
        for version in configs.values():  # a kind forced for one version runs its default in the other
            version.setdefault((kind, None), None)
    # A switch set for one version only keeps its starting value (or empty: unset) for the other.
    for name in set(envs["A"]) | set(envs["B"]):
        default = os.environ.get(name)
        for env in envs.values():
            if name not in env and default is not None:
                env[name] = default
            elif name not in env:
                env[name] = ""
    rows = []
    for d in map(int, args.d.split(",")):
        for L in map(int, args.l.split(",")):
            modes = tuple(args.modes.split(","))
            rows += time_shape(versions, envs, configs, d, L, args.causal, args.rounds, modes)
            torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    result = dict(
        gpu=torch.cuda.get_device_name(),
        torch=torch.__version__,
        triton=triton.__version__,
        dtype="bf16",
        a=os.path.abspath(args.old) if args.old else MODULE,
        b=MODULE,
        env_a=envs["A"],
        env_b=envs["B"],
        config_a={f"{k}@{d}" if d else k: c for (k, d), c in configs["A"].items()},
        config_b={f"{k}@{d}" if d else k: c for (k, d), c in configs["B"].items()},
        rows=rows,
    )
    path = os.path.join(args.out, f"ab_kernels-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
