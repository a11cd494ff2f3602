"""Static look at the Gluon kernels without a GPU: compile each for sm_90a, rerun ptxas -v on its PTX
for performance advisories (e.g. "wgmma.mma_async instructions are serialized"), and count the SASS
instructions that matter (HGMMA, MUFU.TANH, setmaxnreg, warpgroup arrive / wait, local memory).

Needs nvdisasm, e.g. `pip install --target /tmp/nv nvidia-cuda-nvdisasm` (not a project dependency):
    python benchmarks/sass_check.py --nvdisasm /tmp/nv/nvidia/cu13/bin/nvdisasm [--only ws] [--out F]
Predicts no speed; it catches compile-time losses of overlap before a GPU run."""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import tempfile
from pathlib import Path

import triton

from sigcell.ops.sigmoid_attn.hopper import compile_sm90
from sigcell.ops.sigmoid_attn.hopper_bwd import compile_bwd_sm90
from sigcell.ops.sigmoid_attn.hopper_ws import compile_ws_sm90
from sigcell.ops.sigmoid_attn.interface import _HOPPER_WS_CONFIGS

PTXAS = Path(triton.__file__).parent / "backends/nvidia/bin/ptxas"
KEPT = ("HGMMA", "MUFU", "USETMAXREG", "WARPGROUP", "STL", "LDL")


def variants():
    """(name, compile function) of every kernel checked."""
    for dim in (64, 128, 256):
        for causal in (False, True):
            name = f"fwd d{dim}{' causal' if causal else ''}"
            yield name, lambda d=dim, c=causal: compile_sm90(d, causal=c)
        for pingpong in (False, True):
            for persistent in (False, True):
                yield (f"ws d{dim} pingpong={int(pingpong)} persistent={int(persistent)}",
                       lambda d=dim, p=pingpong, s=persistent: compile_ws_sm90(
                           d, _HOPPER_WS_CONFIGS[d], pingpong=p, persistent=s))
    for kind in ("dq", "dkdv"):
        for dim in (64, 128):
            yield f"bwd {kind} d{dim}", lambda k=kind, d=dim: compile_bwd_sm90(k, d)


def check(kernel, nvdisasm: str) -> tuple[list[str], str, dict[str, int]]:
    """ptxas advisories, the register line and the kept SASS opcode counts of one compiled kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = Path(tmp, "k.ptx"), Path(tmp, "k.cubin")
        ptx.write_text(kernel.asm["ptx"])
        log = subprocess.run([str(PTXAS), "-v", "--gpu-name=sm_90a", str(ptx), "-o", str(Path(tmp, "x.o"))],
                             capture_output=True, text=True, check=True)
        cubin.write_bytes(kernel.asm["cubin"])
        sass = subprocess.run([nvdisasm, "-c", str(cubin)], capture_output=True, text=True, check=True).stdout
    text = log.stdout + log.stderr
    advisories = [line.strip() for line in text.splitlines() if "Performance" in line or "C75" in line]
    registers = re.search(r"Used \d+ registers", text)
    ops = collections.Counter()
    for op in re.findall(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Za-z0-9_.]+)", sass, re.M):
        if op.startswith(KEPT):
            ops[re.sub(r"^HGMMA\.\d+x(\d+)x.*", r"HGMMA.N\1", op)] += 1
    return advisories, registers.group(0) if registers else "?", dict(sorted(ops.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvdisasm", required=True, help="path of nvdisasm (CUDA 12.x / 13.x)")
    parser.add_argument("--only", default="", help="check only kernels whose name contains this")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    lines = []
    for name, make in variants():
        if args.only in name:
            advisories, registers, ops = check(make(), args.nvdisasm)
            block = [f"{name:36s} {registers}, {len(advisories)} advisories"]
            block += [f"    {a}" for a in advisories] + [f"    {ops}"]
            print("\n".join(block), flush=True)
            lines += block
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
