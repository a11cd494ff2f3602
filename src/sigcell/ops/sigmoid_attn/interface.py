"""Public sigmoid-attention functions: input checks, torch custom ops, autograd, kernel launchers.

CUDA tensors run the Triton kernels of :mod:`.kernels`; CPU tensors run the plain-PyTorch path of
:mod:`.naive` (the same function, block by block). Both are behind two ``torch.library`` custom ops
(``sigcell::sigmoid_attn_fwd`` / ``sigcell::sigmoid_attn_bwd``) so ``torch.compile`` traces models
that use them without graph breaks.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import weakref
from collections.abc import Iterator

import torch

from sigcell.ops.padding import lengths_from_cu_seqlens, pack_padded, unpack_to_padded
from sigcell.ops.sigmoid_attn import naive
from sigcell.ops.sigmoid_attn.launch import FastKernel, HostDescriptor

__all__ = ["sigmoid_attn_func", "sigmoid_attn_varlen_func"]

MAX_HEAD_DIM = 256
_FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# Debug switches, used by the tests.
_poison_outputs = False  # fill freshly allocated outputs with NaN before the kernels write them
_triton_on_cpu = False  # send CPU tensors to the Triton kernels (needs TRITON_INTERPRET=1)
_plain_pytorch = False  # send CUDA tensors to the plain-PyTorch path (the tests' same-precision oracle)


@contextlib.contextmanager
def poison_outputs() -> Iterator[None]:
    """Within the block, every output buffer starts as NaN, so unwritten elements show up."""
    global _poison_outputs
    previous, _poison_outputs = _poison_outputs, True
    try:
        yield
    finally:
        _poison_outputs = previous


@contextlib.contextmanager
def triton_on_cpu() -> Iterator[None]:
    """Within the block, CPU tensors run the Triton kernels under the Triton interpreter.

    ``TRITON_INTERPRET=1`` must be set before Triton is first imported.
    """
    if os.environ.get("TRITON_INTERPRET") != "1":
        msg = "triton_on_cpu() needs TRITON_INTERPRET=1 in the environment before triton is imported"
        raise RuntimeError(msg)
    global _triton_on_cpu
    previous, _triton_on_cpu = _triton_on_cpu, True
    try:
        yield
    finally:
        _triton_on_cpu = previous


@contextlib.contextmanager
def plain_pytorch() -> Iterator[None]:
    """Within the block, every tensor (CUDA too) runs the plain-PyTorch path."""
    global _plain_pytorch
    previous, _plain_pytorch = _plain_pytorch, True
    try:
        yield
    finally:
        _plain_pytorch = previous


def _new_buffer(shape, dtype: torch.dtype, device: torch.device, zero: bool = False) -> torch.Tensor:
    if zero:
        return torch.zeros(shape, dtype=dtype, device=device)
    buf = torch.empty(shape, dtype=dtype, device=device)
    if _poison_outputs:
        buf.fill_(float("nan"))
    return buf


def _uses_triton(t: torch.Tensor) -> bool:
    # float64 (the reference precision) always runs the plain-PyTorch path.
    if _plain_pytorch or t.dtype == torch.float64:
        return False
    return t.is_cuda or (_triton_on_cpu and t.device.type == "cpu")


# ----------------------------------------------------------------------------------------------------
# Triton launchers
# ----------------------------------------------------------------------------------------------------


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


_fast_kernels: dict[object, FastKernel] = {}


def _fast(kernel) -> FastKernel:
    """The :class:`~.launch.FastKernel` of a ``triton.jit`` / ``gluon.jit`` function (one per kernel)."""
    fast = _fast_kernels.get(kernel)
    if fast is None:
        fast = _fast_kernels[kernel] = FastKernel(kernel)
    return fast


# Block sizes and warps per kernel and padded head dim (16 .. 256), chosen by benchmarks/sweep_configs.py
# on an H200 (benchmarks/NOTES.md). Keys: "fwd", "dkdv", "dq", "fused" (the opt-in fused backward).
_CONFIGS: dict[str, dict[int, tuple[int, int, int, int]]] = {
    # BLOCK_D: (BLOCK_M, BLOCK_N, num_warps, num_stages)
    "fwd": {
        16: (128, 64, 4, 3),
        32: (128, 64, 4, 3),
        64: (128, 64, 8, 3),
        128: (64, 64, 4, 3),
        256: (128, 64, 8, 2),
    },
    # BLOCK_M = 32 at D = 128 gave 3x plain PyTorch's dK error in 16-bit on an H200 (NOTES.md, v2).
    "dkdv": {
        16: (64, 64, 4, 2),
        32: (64, 64, 4, 2),
        64: (64, 64, 4, 2),
        128: (64, 64, 4, 2),
        256: (64, 64, 8, 1),  # v13 sweep (H200): 216 TFLOPS vs 182 for 32 x 32 / 4 warps
    },
    "dq": {
        16: (64, 64, 4, 2),
        32: (64, 64, 4, 2),
        64: (128, 64, 8, 3),
        128: (128, 64, 8, 3),
        256: (64, 64, 4, 2),
    },
    # Swept at D64 / D128 (v8; 1.3-1.6x slower than the split pair there). D = 256 takes 8 warps: with 4,
    # ptxas (sm_90a, compiled without a GPU) kept 32 registers and spilled 22 KB; with 8, 0.5 KB.
    "fused": {
        16: (64, 64, 4, 2),
        32: (64, 64, 4, 2),
        64: (64, 64, 4, 2),
        128: (128, 64, 8, 2),
        256: (32, 32, 8, 1),
    },
}
# float32 takes the FMA path ("ieee" products, no tensor cores): small tiles keep shared memory within
# bounds and compile times short (128 x 128 float32 tiles took minutes to compile on an H200).
_FP32_CONFIGS: dict[int, tuple[int, int, int, int]] = {
    16: (64, 32, 4, 2),
    32: (64, 32, 4, 2),
    64: (64, 32, 4, 2),
    128: (32, 32, 4, 2),
    256: (32, 32, 4, 1),
}
_config_override: dict[str, tuple[int, int, int, int]] = {}


def set_config_override(kind: str, config: tuple[int, ...] | None) -> None:
    """Force a kernel kind's launch config (benchmark sweeps, tests): ``(BLOCK_M, BLOCK_N, num_warps,
    num_stages)``, or the tuple its table above holds (the ``hopper_ws*`` kinds)."""
    if config is None:
        _config_override.pop(kind, None)
    else:
        _config_override[kind] = config


def _block_config(head_dim: int, kind: str, dtype: torch.dtype) -> dict[str, int]:
    """Launch configuration; small blocks under the interpreter, where each program runs in numpy."""
    block_d = max(16, 1 << (head_dim - 1).bit_length())
    if _interpreting():
        return {"BLOCK_D": block_d, "BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 1, "num_stages": 1}
    table = _FP32_CONFIGS if dtype == torch.float32 else _CONFIGS[kind]
    block_m, block_n, warps, stages = _config_override.get(kind) or table[block_d]
    return {
        "BLOCK_D": block_d,
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "num_warps": warps,
        "num_stages": stages,
    }


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 inputs get full float32 products (tf32 would miss the 1e-4 accuracy bound).
    return "ieee" if dtype == torch.float32 else "tf32"


def _common_flags(q, key_bias, slopes, causal, varlen, fast_sigmoid) -> dict:
    return {
        "HEAD_DIM": q.shape[-1],
        "CAUSAL": causal,
        "HAS_KEY_BIAS": key_bias is not None,
        "HAS_ALIBI": slopes is not None,
        "STORE_ALL_ROWS": not varlen,
        "FAST_SIGMOID": fast_sigmoid,
        "DOT_PRECISION": _dot_precision(q.dtype),
        "EMULATE_BF16": _interpreting() and q.dtype == torch.bfloat16,
    }


# CUDA caps grid dimensions 1 and 2 at 65535 programs; dimension 0 is practically unbounded.
_MAX_GRID_Y = 65535


def _grid(n_blocks: int, n_bh: int) -> tuple[tuple[int, int], bool]:
    """Grid and BLOCK_FAST flag: blocks of one (sequence, head) on axis 0 (launched together, sharing
    K / V in L2) unless there are more (sequence, head) pairs than axis 1 allows.
    ``SIGCELL_BLOCK_FAST_GRID=0`` forces the (sequence, head)-major order (benchmark A/B)."""
    if n_bh <= _MAX_GRID_Y and os.environ.get("SIGCELL_BLOCK_FAST_GRID", "1") != "0":
        return (n_blocks, n_bh), True
    return (n_bh, n_blocks), False


def _tma_enabled() -> bool:
    """Forward K / V loads through TMA tensor descriptors (where strides allow); ``SIGCELL_FWD_TMA=0``
    turns them off (benchmark A/B; measured in benchmarks/NOTES.md, v6)."""
    return os.environ.get("SIGCELL_FWD_TMA", "1") != "0"


def _tma_ok(t: torch.Tensor) -> bool:
    """TMA needs a unit last stride and 16-byte aligned base and other strides."""
    size = t.element_size()
    return (
        t.dim() == 4
        and t.stride(-1) == 1
        and t.data_ptr() % 16 == 0
        and all((st * size) % 16 == 0 for st in t.stride()[:-1])
    )


def _row_block_descriptor(t: torch.Tensor, rows: int, cfg: dict[str, int]) -> HostDescriptor:
    """A ``[B', rows, H, D]`` descriptor whose blocks are ``rows`` rows of one head: ``[1, rows, 1, BD]``."""
    return HostDescriptor(t, t.shape, t.stride(), (1, rows, 1, cfg["BLOCK_D"]))


def _kv_descriptor(t: torch.Tensor, cfg: dict[str, int]):
    """A descriptor whose loads are one key block of one head: ``[1, BN, 1, BD]``."""
    return _row_block_descriptor(t, cfg["BLOCK_N"], cfg)


def _fused_tma_dq_enabled() -> bool:
    """dQ of the opt-in fused backward through TMA bulk reduce-adds; ``SIGCELL_FUSED_TMA_DQ=0`` keeps the
    per-element float32 atomics (benchmark A/B)."""
    return os.environ.get("SIGCELL_FUSED_TMA_DQ", "1") != "0"


def _strides(t: torch.Tensor, varlen: bool) -> tuple[int, ...]:
    """Strides of a 4-D ``[B', rows, H, D]`` tensor; packed inputs have no batch stride."""
    s = t.stride()
    return (0 if varlen else s[0], *s[1:])


def _key_bias_strides(key_bias: torch.Tensor | None, varlen: bool) -> tuple[int, int]:
    if key_bias is None:
        return (0, 0)
    return (0 if varlen else key_bias.stride(0), key_bias.stride(1))


# Hopper forward (hopper.py, Gluon): head dim -> (BLOCK_M, BLOCK_N, warps, stages). Measured on an H200
# (benchmarks/NOTES.md, v13): D128 beats the Triton forward by ~20 %; at D64 it did not, so D64 stays on
# the Triton kernel unless SIGCELL_HOPPER_FWD_DIMS names it (benchmark A/B). D256: 64 query rows per
# warpgroup (a 64 x 256 float32 accumulator is 128 registers per thread); 3 stages (224 KB of shared
# memory) measured 578 TFLOPS at L4k against 420 with 2 (NOTES.md, v16).
_HOPPER_CONFIGS = {64: (64, 128, 4, 2), 128: (128, 64, 4, 2), 256: (64, 64, 4, 3)}
_HOPPER_DEFAULT_DIMS = "128,256"
# Warp-specialized forward (hopper_ws.py): head dim -> (query rows per consumer warpgroup, BLOCK_N,
# stages[, V stages]); a program owns two consumers' rows. Configs from the v18 sweep (H200, L4k). A
# fourth entry gives V blocks their own ring of that many stages (K keeps ``stages``; the output is then
# staged in the Q tile): opt-in through sweep configs, not yet run on a GPU (NOTES.md, v21).
_HOPPER_WS_CONFIGS = {64: (128, 64, 3), 128: (64, 64, 3), 256: (64, 32, 4)}
# Split-ring configs the GPU tests cover (the sweep's candidates; none is a default yet).
_HOPPER_WS_SPLIT_CONFIGS = {64: (128, 64, 3, 2), 128: (64, 128, 3, 2), 256: (64, 64, 3, 2)}
# Where it is the default: head dim -> shortest query span (rows per sequence) that takes it. v18 A/B
# against hopper.py: D128 0.95x at L1k, 1.06-1.09x at L4k-16k; D256 1.01-1.10x; D64 0.92-0.97x the
# Triton kernel (stays there).
_HOPPER_WS_MIN_SPAN = {128: 2048, 256: 0}
# Opt-in ping-pong inside the warp-specialized forward (the consumers alternate at issuing matmuls;
# SIGCELL_HOPPER_WS_PINGPONG_DIMS, default none: not yet run on a GPU; benchmarks/NOTES.md, v20).
_HOPPER_WS_PINGPONG_DEFAULT_DIMS = ""
# Opt-in persistent warp-specialized forward (one program per SM walks causally balanced pairs of tiles;
# SIGCELL_HOPPER_WS_PERSISTENT_DIMS, default none: not yet run on a GPU; NOTES.md, v22).
_HOPPER_WS_PERSISTENT_DEFAULT_DIMS = ""
# Opt-in warp-specialized backward (hopper_ws_bwd.py; SIGCELL_HOPPER_WS_BWD_DIMS, default none: not yet run
# on a GPU). Its dQ kernel: head dim -> (query rows per consumer, BLOCK_N, stages); spill-free (ptxas).
_HOPPER_WS_DQ_CONFIGS = {64: (64, 64, 2), 128: (64, 64, 2), 256: (64, 32, 2)}
# ... and its dK / dV kernel: head dim -> (query rows per streamed block, keys per consumer, stages);
# ptxas: D128 spills 108 bytes (the split kernel 24), D256 (dK and dV in one launch each) none.
_HOPPER_WS_DKDV_CONFIGS = {64: (64, 64, 2), 128: (64, 64, 2), 256: (32, 64, 2)}
# Hopper backward (hopper_bwd.py): kernel -> head dim -> (BLOCK_M, BLOCK_N, warps, stages). dK / dV
# programs own BLOCK_N keys (one warpgroup per 64 of them) and stream BLOCK_M queries; dQ programs own
# BLOCK_M queries and stream BLOCK_N keys.
# Chosen by benchmarks/sweep_configs.py --kinds hopper_dkdv,hopper_dq at L4k on an H200 (NOTES.md, v14).
# D256: dK and dV in two launches of the dK / dV kernel (two 64 x 256 float32 accumulators do not fit a
# warpgroup's registers); configs from the v17 sweep (the dK launch spills 80 bytes and is still the
# fastest; 32-row query blocks, spill-free, were 14 % slower).
_HOPPER_BWD_CONFIGS = {
    "dkdv": {64: (64, 64, 4, 2), 128: (64, 64, 4, 2), 256: (64, 64, 4, 2)},
    "dq": {64: (64, 64, 4, 3), 128: (128, 64, 8, 3), 256: (64, 32, 4, 4)},
    # The opt-in one-kernel backward (SIGCELL_HOPPER_BWD_KERNELS=fused): 0.89-0.95x the split pair at D64,
    # 0.73-0.77x at D128 (spills) in v14c.
    "fused": {64: (64, 128, 8, 2), 128: (64, 128, 8, 2)},
}
# Head dims whose dK and dV take one launch each (the kernel's WITH_DK / WITH_DV).
_SPLIT_DKDV_DIMS = {256}
# Head dims the Gluon backward takes by default; SIGCELL_HOPPER_BWD_DIMS overrides (benchmark A/B).
_HOPPER_BWD_DEFAULT_DIMS = "64,128,256"


def _env_dims(name: str, default: str, known) -> set[int]:
    """Head dims listed (comma-separated) in the environment variable ``name`` (``default`` when unset)
    that have a configuration in ``known``."""
    names = os.environ.get(name, default)
    return {int(x) for x in names.split(",") if x.strip()} & set(known)


def _hopper_dims() -> set[int]:
    """Head dims the Gluon forward takes; ``SIGCELL_HOPPER_FWD=0`` turns it off (benchmark A/B)."""
    if os.environ.get("SIGCELL_HOPPER_FWD", "1") == "0":
        return set()
    dims = _env_dims("SIGCELL_HOPPER_FWD_DIMS", _HOPPER_DEFAULT_DIMS, _HOPPER_CONFIGS)
    return dims | _env_dims("SIGCELL_HOPPER_WS_DIMS", "", _HOPPER_WS_CONFIGS)


def _uses_ws_forward(dim: int, span: int) -> bool:
    """Whether the Gluon forward of head dim ``dim`` runs warp-specialized (hopper_ws.py) for sequences
    of ``span`` query rows: per _HOPPER_WS_MIN_SPAN, or for exactly the head dims that
    ``SIGCELL_HOPPER_WS_DIMS`` names (benchmark A/B and tests; empty: never)."""
    if "SIGCELL_HOPPER_WS_DIMS" in os.environ:
        return dim in _env_dims("SIGCELL_HOPPER_WS_DIMS", "", _HOPPER_WS_CONFIGS)
    return dim in _HOPPER_WS_MIN_SPAN and span >= _HOPPER_WS_MIN_SPAN[dim]


@functools.cache
def _is_hopper(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index) == (9, 0) and _gluon_kernels_available()


# Triton versions (major, minor) whose Gluon API the Hopper kernels were run and tested with. Gluon is
# experimental and changes between releases; other versions take the portable Triton kernels unless
# SIGCELL_GLUON_ANY_TRITON=1 asks to try the Hopper kernels anyway.
_GLUON_TESTED_TRITON = {(3, 6)}


@functools.cache
def _gluon_kernels_available() -> bool:
    """Whether this Triton has the Gluon API the Hopper kernels are written in (missing before Triton 3.4,
    and it may change); without it every GPU runs the portable Triton kernels, with one warning."""
    import warnings

    import triton

    version = tuple(int(x) for x in triton.__version__.split(".")[:2] if x.isdigit())
    fallback = "the portable Triton kernels run instead (slower on H100 / H200)"
    if version not in _GLUON_TESTED_TRITON and os.environ.get("SIGCELL_GLUON_ANY_TRITON") != "1":
        warnings.warn(
            f"sigcell: the Hopper (Gluon) kernels are tested with triton 3.6, this is {triton.__version__}: "
            f"{fallback}; set SIGCELL_GLUON_ANY_TRITON=1 to try them",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    try:
        from sigcell.ops.sigmoid_attn import hopper, hopper_bwd, hopper_ws, hopper_ws_bwd  # noqa: F401
    except (ImportError, AttributeError, TypeError) as err:
        warnings.warn(
            f"sigcell: the Hopper (Gluon) kernels do not load with triton {triton.__version__} "
            f"({type(err).__name__}: {err}): {fallback}",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def _flat_rows_ok(t: torch.Tensor, varlen: bool) -> bool:
    """Whether ``[B', rows, H, D]`` reads as a 2-D ``[B' * rows, H * D]`` TMA tensor: unit stride in D,
    heads packed, sequences back to back, 16-byte aligned rows and base."""
    b, rows, _, dim = t.shape
    return (
        t.stride(3) == 1
        and t.stride(2) == dim
        and (varlen or b == 1 or t.stride(0) == rows * t.stride(1))
        and (t.stride(1) * t.element_size()) % 16 == 0
        and t.data_ptr() % 16 == 0
    )


def _hopper_eligible(q, slopes, fast_sigmoid, n_bh, tensors, varlen) -> bool:
    """What the Gluon kernels (hopper.py, hopper_bwd.py) need: bf16 / fp16 on an sm_90 GPU with the fast
    sigmoid, no ALiBi, a grid within CUDA's y limit and tensors that read as 2-D rows."""
    return (
        q.is_cuda
        and not _interpreting()
        and q.dtype in (torch.bfloat16, torch.float16)
        and fast_sigmoid
        and slopes is None
        and n_bh <= _MAX_GRID_Y
        and _is_hopper(q.device.index if q.device.index is not None else torch.cuda.current_device())
        and all(_flat_rows_ok(t, varlen) for t in tensors)
    )


def _uses_hopper_forward(q, k, v, slopes, varlen, fast_sigmoid, n_bh) -> bool:
    """The Gluon forward serves the head dims of ``_hopper_dims``; everything else runs the portable
    Triton kernel."""
    return q.shape[-1] in _hopper_dims() and _hopper_eligible(
        q, slopes, fast_sigmoid, n_bh, (q, k, v), varlen
    )


def _hopper_bwd_kernels(q, k, v, dout, slopes, varlen, fast_sigmoid, n_bh) -> set[str]:
    """Backward kernels ("dkdv", "dq") that run in Gluon; the others run in Triton.
    ``SIGCELL_HOPPER_BWD=0`` turns both off, ``SIGCELL_HOPPER_BWD_DIMS=64,128,256`` picks the head dims,
    ``SIGCELL_HOPPER_BWD_KERNELS=dkdv`` keeps one (benchmark A/B), ``SIGCELL_HOPPER_BWD_KERNELS=fused``
    selects the opt-in one-kernel Gluon backward ({"fused"}; D64 / D128 only)."""
    dim = q.shape[-1]
    dims = _env_dims("SIGCELL_HOPPER_BWD_DIMS", _HOPPER_BWD_DEFAULT_DIMS, _HOPPER_BWD_CONFIGS["dkdv"])
    if os.environ.get("SIGCELL_HOPPER_BWD", "1") == "0" or dim not in dims:
        return set()
    if not _hopper_eligible(q, slopes, fast_sigmoid, n_bh, (q, k, v, dout), varlen):
        return set()
    names = {x.strip() for x in os.environ.get("SIGCELL_HOPPER_BWD_KERNELS", "dkdv,dq").split(",")}
    if "fused" in names:
        return {"fused"} if dim in _HOPPER_BWD_CONFIGS["fused"] else set()
    return names & {"dkdv", "dq"}


def _flat_descriptor(t: torch.Tensor, rows: int) -> HostDescriptor:
    """TMA descriptor of ``[B', rows', H, D]`` read as ``[B' * rows', H * D]`` in ``[rows, D]`` blocks."""
    b, n, h, dim = t.shape
    layout = _nvmma_layout(rows, dim, t.dtype)
    return HostDescriptor(t, (b * n, h * dim), (t.stride(1), 1), (rows, dim), layout)


@functools.cache
def _nvmma_layout(rows: int, dim: int, dtype: torch.dtype):
    """Shared-memory layout of a ``[rows, dim]`` TMA block (cached: half of a descriptor's host time)."""
    from triton.experimental.gluon import language as gl

    element = gl.bfloat16 if dtype == torch.bfloat16 else gl.float16
    return gl.NVMMASharedLayout.get_default_for([rows, dim], element)


def _hopper_forward(
    q, k, v, bias, key_bias, start_q, len_q, start_k, len_k, scale, causal, varlen, span, out
):
    """Launch the Gluon forward (hopper.py, or the warp-specialized hopper_ws.py) into ``out``."""
    n_seq, heads = bias.shape
    dim = q.shape[-1]
    tail = ()  # arguments after scale_half (the persistent kernel's tile counts)
    if _uses_ws_forward(dim, span):
        from sigcell.ops.sigmoid_attn import hopper_ws

        kernel, warps = hopper_ws.sigmoid_attn_fwd_hopper_ws_kernel, hopper_ws.CONSUMER_WARPS.value
        block_m, block_n, stages, *v_stages = _config_override.get("hopper_ws") or _HOPPER_WS_CONFIGS[dim]
        pingpong = dim in _env_dims(
            "SIGCELL_HOPPER_WS_PINGPONG_DIMS", _HOPPER_WS_PINGPONG_DEFAULT_DIMS, _HOPPER_WS_CONFIGS
        )
        v_ring = v_stages[0] if v_stages else 0  # 0: one ring of K / V pairs
        options = {"maxnreg": hopper_ws.ws_maxnreg(), "PINGPONG": pingpong, "V_STAGES": v_ring}
        grid = (_cdiv(span, 2 * block_m), n_seq * heads)
        persistent = _env_dims(
            "SIGCELL_HOPPER_WS_PERSISTENT_DIMS", _HOPPER_WS_PERSISTENT_DEFAULT_DIMS, _HOPPER_WS_CONFIGS
        )
        if dim in persistent:
            kernel = hopper_ws.sigmoid_attn_fwd_hopper_ws_persistent_kernel
            tail = grid  # tiles per (sequence, head), (sequence, head) pairs
            pairs = (grid[0] + 1) // 2 * grid[1]
            grid = (max(1, min(pairs, _sm_count(q.device))),)
    else:
        from sigcell.ops.sigmoid_attn.hopper import sigmoid_attn_fwd_hopper_kernel as kernel

        block_m, block_n, warps, stages = _config_override.get("hopper_fwd") or _HOPPER_CONFIGS[dim]
        grid, options = (_cdiv(span, block_m), n_seq * heads), {}
    _fast(kernel)[grid](
        _flat_descriptor(q, block_m),
        _flat_descriptor(k, block_n),
        _flat_descriptor(v, block_n),
        out,
        bias,
        key_bias if key_bias is not None else bias,
        start_q,
        len_q,
        start_k,
        len_k,
        0 if varlen else q.shape[1],
        0 if varlen else k.shape[1],
        out.stride(1),
        *_key_bias_strides(key_bias, varlen),
        0.5 * scale,
        *tail,
        **_hopper_constants(heads, k, key_bias, causal, varlen, stages, warps),
        **options,
    )
    return out


def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (the persistent kernel's program count)."""
    return _sm_count_of(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _sm_count_of(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _hopper_constants(heads, k, key_bias, causal, varlen, stages, warps) -> dict:
    """Compile-time arguments every Gluon kernel takes (hopper*.py), for these tensors."""
    from sigcell.ops.sigmoid_attn.hopper import compile_constants

    group = heads // k.shape[2]
    return compile_constants(stages, warps, causal, key_bias is not None, not varlen, heads, group)


def _hopper_bwd_config(kind: str, dim: int) -> tuple[int, int, int, int]:
    """Launch config of a Gluon backward kernel; ``set_config_override("hopper_" + kind, ...)`` (sweeps)."""
    return _config_override.get(f"hopper_{kind}") or _HOPPER_BWD_CONFIGS[kind][dim]


def _hopper_dkdv(
    q, k, v, dout, dk, dv, dkb_part, bias, key_bias, lengths, scale, causal, varlen, span_k, dq=None
) -> torch.Tensor | None:
    """Launch the Gluon dK / dV kernel (hopper_bwd.py, or the warp-specialized one of hopper_ws_bwd.py) into
    ``dk``, ``dv`` and ``dkb_part``. Given ``dq``, the fused variant also computes dQ (through a zeroed
    float32 buffer, nondeterministic order of additions) and returns the per-(sequence x head, key
    block) sums of dS (for d bias)."""
    n_seq, heads = bias.shape
    kv_heads = k.shape[2]
    fused = dq is not None
    dim = q.shape[-1]
    if _uses_ws_backward(dim) and not fused:
        from sigcell.ops.sigmoid_attn import hopper_ws, hopper_ws_bwd

        kernel, warps = hopper_ws_bwd.sigmoid_attn_bwd_dkdv_hopper_ws_kernel, hopper_ws.CONSUMER_WARPS.value
        block_m, block_n, stages = _config_override.get("hopper_ws_dkdv") or _HOPPER_WS_DKDV_CONFIGS[dim]
        program_rows, options = 2 * block_n, {"maxnreg": hopper_ws.ws_maxnreg()}
    else:
        from sigcell.ops.sigmoid_attn.hopper_bwd import sigmoid_attn_bwd_dkdv_hopper_kernel as kernel

        block_m, block_n, warps, stages = _hopper_bwd_config("fused" if fused else "dkdv", dim)
        program_rows, options = block_n, {}
    num_n = _cdiv(max(span_k, 1), block_n)
    assert dk.stride(1) == dv.stride(1)
    dkb_strides = (0, 0, 0)
    if dkb_part is not None:
        dkb_strides = (dkb_part.stride(0), 0 if varlen else dkb_part.stride(1), dkb_part.stride(-1))
    dq_acc = dbias_part = bias  # placeholders: the split kernel takes no dQ
    if fused:
        dq_acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dbias_part = torch.zeros(n_seq * heads, num_n, dtype=torch.float32, device=q.device)
    descriptors = [_flat_descriptor(t, rows) for t, rows in ((q, block_m), (dout, block_m), (k, block_n))]
    descriptors.append(_flat_descriptor(v, block_n))
    # (WITH_DK, WITH_DV) per launch: one launch computes both, except at the head dims of _SPLIT_DKDV_DIMS.
    parts = [(False, True), (True, False)] if q.shape[-1] in _SPLIT_DKDV_DIMS else [(True, True)]
    for with_dk, with_dv in parts:
        _fast(kernel)[(_cdiv(max(span_k, 1), program_rows), n_seq * kv_heads)](
            *descriptors,
            dk,
            dv,
            dkb_part if dkb_part is not None else bias,
            bias,
            key_bias if key_bias is not None else bias,
            *lengths,
            0 if varlen else q.shape[1],
            0 if varlen else k.shape[1],
            dk.stride(1),
            *_key_bias_strides(key_bias, varlen),
            *dkb_strides,
            dq_acc,
            dbias_part,
            dq_acc.stride(1) if fused else 0,
            num_n,
            scale,
            FUSED=fused,
            WITH_DK=with_dk,
            WITH_DV=with_dv,
            **_hopper_constants(heads, k, key_bias, causal, varlen, stages, warps),
            **options,
        )
    if not fused:
        return None
    torch.mul(dq_acc, scale * 0.25, out=dq)  # the kernel adds 4 dS k
    return dbias_part


def _uses_ws_backward(dim: int) -> bool:
    """Whether the backward runs the warp-specialized dQ and dK / dV kernels: for the head dims
    ``SIGCELL_HOPPER_WS_BWD_DIMS`` names (the fused variant keeps its own kernel)."""
    return dim in _env_dims("SIGCELL_HOPPER_WS_BWD_DIMS", "", _HOPPER_WS_DQ_CONFIGS)


def _hopper_dq(q, k, v, dout, dq, bias, key_bias, lengths, scale, causal, varlen, span_q) -> torch.Tensor:
    """Launch the Gluon dQ kernel (hopper_bwd.py, or the warp-specialized one of hopper_ws_bwd.py) into
    ``dq``; returns the per-(sequence x head, query block) sums of dS (for d bias)."""
    n_seq, heads = bias.shape
    dim = q.shape[-1]
    if _uses_ws_backward(dim):
        from sigcell.ops.sigmoid_attn import hopper_ws, hopper_ws_bwd

        kernel, warps = hopper_ws_bwd.sigmoid_attn_bwd_dq_hopper_ws_kernel, hopper_ws.CONSUMER_WARPS.value
        block_m, block_n, stages = _config_override.get("hopper_ws_dq") or _HOPPER_WS_DQ_CONFIGS[dim]
        program_rows, options = 2 * block_m, {"maxnreg": hopper_ws.ws_maxnreg()}
    else:
        from sigcell.ops.sigmoid_attn.hopper_bwd import sigmoid_attn_bwd_dq_hopper_kernel as kernel

        block_m, block_n, warps, stages = _hopper_bwd_config("dq", dim)
        program_rows, options = block_m, {}
    num_m = _cdiv(max(span_q, 1), block_m)
    dbias_part = torch.zeros(n_seq * heads, num_m, dtype=torch.float32, device=q.device)
    _fast(kernel)[(_cdiv(max(span_q, 1), program_rows), n_seq * heads)](
        _flat_descriptor(q, block_m),
        _flat_descriptor(dout, block_m),
        _flat_descriptor(k, block_n),
        _flat_descriptor(v, block_n),
        dq,
        dbias_part,
        bias,
        key_bias if key_bias is not None else bias,
        *lengths,
        0 if varlen else q.shape[1],
        0 if varlen else k.shape[1],
        dq.stride(1),
        *_key_bias_strides(key_bias, varlen),
        num_m,
        scale,
        **_hopper_constants(heads, k, key_bias, causal, varlen, stages, warps),
        **options,
    )
    return dbias_part


def _triton_forward(
    q,
    k,
    v,
    bias,
    key_bias,
    slopes,
    start_q,
    len_q,
    start_k,
    len_k,
    scale,
    causal,
    varlen,
    max_seqlen_q,
    fast_sigmoid,
):
    from sigcell.ops.sigmoid_attn.kernels import sigmoid_attn_fwd_kernel

    n_seq, heads = bias.shape
    rows_q = q.shape[1]
    out = _new_buffer(q.shape, q.dtype, q.device)
    if out.numel() == 0 or n_seq == 0:
        return out.zero_()
    span = max_seqlen_q if varlen else rows_q
    if _uses_hopper_forward(q, k, v, slopes, varlen, fast_sigmoid, n_seq * heads):
        return _hopper_forward(
            q, k, v, bias, key_bias, start_q, len_q, start_k, len_k, scale, causal, varlen, span, out
        )
    dummy = bias

    use_tma = _tma_enabled() and _tma_ok(k) and _tma_ok(v)

    def launch(cfg):
        grid, block_fast = _grid(_cdiv(span, cfg["BLOCK_M"]), n_seq * heads)
        k_desc, v_desc = (_kv_descriptor(t, cfg) for t in (k, v)) if use_tma else (k, v)
        _fast(sigmoid_attn_fwd_kernel)[grid](
            q,
            k,
            v,
            k_desc,
            v_desc,
            out,
            bias,
            key_bias if key_bias is not None else dummy,
            slopes if slopes is not None else dummy,
            start_q,
            len_q,
            start_k,
            len_k,
            *_strides(q, varlen),
            *_strides(k, varlen),
            *_strides(v, varlen),
            *_strides(out, varlen),
            *_key_bias_strides(key_bias, varlen),
            scale,
            rows_q,
            heads,
            heads // k.shape[2],
            **_common_flags(q, key_bias, slopes, causal, varlen, fast_sigmoid),
            BLOCK_FAST=block_fast,
            USE_TMA=use_tma,
            **cfg,
        )

    _launch("fwd", q, launch)
    return out


def _triton_backward(
    dout,
    q,
    k,
    v,
    bias,
    key_bias,
    slopes,
    start_q,
    len_q,
    start_k,
    len_k,
    scale,
    causal,
    varlen,
    max_seqlen_q,
    max_seqlen_k,
    fast_sigmoid,
    need_dbias=True,
):
    """dq, dk, dv, d bias ``[B, H]`` (None unless ``need_dbias``) and d key_bias (or None).

    By default two deterministic kernels: dK / dV per key block, then dQ per query block (each recomputes
    S and dP: 7 block matmuls per (query block, key block) pair). ``SIGCELL_FUSED_BWD=1`` selects one
    fused kernel per key block that also adds dQ into a float32 buffer with atomics (5 matmuls; the buffer
    takes 4 bytes per element of q). Its dQ is nondeterministic: the order of the float32 additions varies
    from run to run. d bias and d key_bias stay deterministic on both paths.
    """
    from sigcell.ops.sigmoid_attn.kernels import sigmoid_attn_bwd_dkdv_kernel, sigmoid_attn_bwd_dq_kernel

    n_seq, heads = bias.shape
    kv_heads = k.shape[2]
    rows_q, rows_k = q.shape[1], k.shape[1]
    dq = _new_buffer(q.shape, q.dtype, q.device)
    dk = _new_buffer(k.shape, k.dtype, k.device)
    dv = _new_buffer(v.shape, v.dtype, v.device)
    span_q = max_seqlen_q if varlen else rows_q
    span_k = max_seqlen_k if varlen else rows_k
    # Partial sums, reduced below in a fixed order (deterministic): per (kv head, key row) for d key_bias,
    # per (b, h, query block) for d bias (per key block in the fused kernel).
    dkb_part = None
    if key_bias is not None:
        dkb_part = torch.zeros(kv_heads, *key_bias.shape, dtype=torch.float32, device=q.device)
    dbias_part = torch.zeros(n_seq * heads, 1, dtype=torch.float32, device=q.device)
    if n_seq and dout.numel():
        flags = _common_flags(q, key_bias, slopes, causal, varlen, fast_sigmoid)
        dummy = bias
        kb = key_bias if key_bias is not None else dummy
        sl = slopes if slopes is not None else dummy
        kb_strides = _key_bias_strides(key_bias, varlen)
        dkb_strides = (
            (0, 0, 0)
            if dkb_part is None
            else (dkb_part.stride(0), 0 if varlen else dkb_part.stride(1), dkb_part.stride(2))
        )

        def launch_dkdv(cfg, fused=False):
            nonlocal dbias_part, dq_acc
            num_n = _cdiv(max(span_k, 1), cfg["BLOCK_N"])
            if fused:
                # Programs add to dQ rows and skip padding rows, which stay exactly 0; one d bias partial
                # per (sequence, head, key block).
                dq_acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
                dbias_part = torch.zeros(n_seq * heads, num_n, dtype=torch.float32, device=q.device)
            grid, block_fast = _grid(num_n, n_seq * kv_heads)
            # The fused kernel adds its dQ tiles with TMA bulk reduce-adds where the float32 buffer allows
            # (not under the interpreter, which has no bulk reduce); elsewhere one atomic per element.
            tma_dq = fused and _fused_tma_dq_enabled() and not _interpreting() and _tma_ok(dq_acc)
            _fast(sigmoid_attn_bwd_dkdv_kernel)[grid](
                q,
                k,
                v,
                dout,
                dq_acc if fused else dummy,
                _row_block_descriptor(dq_acc, cfg["BLOCK_M"], cfg) if tma_dq else dummy,
                dk,
                dv,
                dkb_part if dkb_part is not None else dummy,
                dbias_part if fused else dummy,
                bias,
                kb,
                sl,
                start_q,
                len_q,
                start_k,
                len_k,
                *_strides(q, varlen),
                *_strides(k, varlen),
                *_strides(v, varlen),
                *_strides(dout, varlen),
                *(_strides(dq_acc, varlen) if fused else (0, 0, 0, 0)),
                *_strides(dk, varlen),
                *_strides(dv, varlen),
                *kb_strides,
                *dkb_strides,
                scale,
                rows_k,
                num_n,
                heads,
                kv_heads,
                heads // kv_heads,
                **flags,
                BLOCK_FAST=block_fast,
                FUSED=fused,
                TMA_DQ=tma_dq,
                **cfg,
            )

        def launch_dq(cfg):
            nonlocal dbias_part
            num_m = _cdiv(max(span_q, 1), cfg["BLOCK_M"])
            dbias_part = torch.zeros(n_seq * heads, num_m, dtype=torch.float32, device=q.device)
            grid, block_fast = _grid(num_m, n_seq * heads)
            _fast(sigmoid_attn_bwd_dq_kernel)[grid](
                q,
                k,
                v,
                dout,
                dq,
                dbias_part,
                bias,
                kb,
                sl,
                start_q,
                len_q,
                start_k,
                len_k,
                *_strides(q, varlen),
                *_strides(k, varlen),
                *_strides(v, varlen),
                *_strides(dout, varlen),
                *_strides(dq, varlen),
                *kb_strides,
                scale,
                rows_q,
                num_m,
                heads,
                heads // kv_heads,
                **flags,
                BLOCK_FAST=block_fast,
                **cfg,
            )

        dq_acc = None
        lengths = (start_q, len_q, start_k, len_k)
        hopper = _hopper_bwd_kernels(q, k, v, dout, slopes, varlen, fast_sigmoid, n_seq * heads)
        if "fused" in hopper:
            dbias_part = _hopper_dkdv(
                q, k, v, dout, dk, dv, dkb_part, bias, key_bias, lengths, scale, causal, varlen, span_k, dq
            )
        elif os.environ.get("SIGCELL_FUSED_BWD") == "1":
            _launch("fused", q, lambda cfg: launch_dkdv(cfg, fused=True))
            torch.mul(dq_acc, scale * 0.25, out=dq)  # the kernel adds 4 dS k (kernels._sigmoid_and_slope4)
        else:
            if "dkdv" in hopper:
                _hopper_dkdv(
                    q, k, v, dout, dk, dv, dkb_part, bias, key_bias, lengths, scale, causal, varlen, span_k
                )
            else:
                _launch("dkdv", q, launch_dkdv)
            if "dq" in hopper:
                dbias_part = _hopper_dq(
                    q, k, v, dout, dq, bias, key_bias, lengths, scale, causal, varlen, span_q
                )
            else:
                _launch("dq", q, launch_dq)
    else:
        for grad in (dq, dk, dv):
            grad.zero_()
    dbias = dbias_part.sum(dim=1).view(n_seq, heads) if need_dbias else None
    dkey_bias = dkb_part.sum(dim=0) if dkb_part is not None else None
    return dq, dk, dv, dbias, dkey_bias


def _cdiv(a: int, b: int) -> int:
    """Ceiling division (number of blocks)."""
    return -(-a // b)


# Configurations that had to shrink to fit this GPU's shared memory, by (kind, padded head dim, dtype).
_fitted_configs: dict[tuple[str, int, torch.dtype], dict[str, int]] = {}


def _shrink(cfg: dict[str, int]) -> dict[str, int] | None:
    """The next smaller configuration: fewer pipeline stages first, then half the larger block."""
    cfg = dict(cfg)
    if cfg["num_stages"] > 1:
        cfg["num_stages"] -= 1
    elif max(cfg["BLOCK_M"], cfg["BLOCK_N"]) > 16:
        key = "BLOCK_M" if cfg["BLOCK_M"] >= cfg["BLOCK_N"] else "BLOCK_N"
        cfg[key] //= 2
    else:
        return None
    return cfg


def _launch(kind: str, q: torch.Tensor, launch) -> None:
    """Launch with the tuned configuration; where it needs more shared memory than this GPU has (float32,
    smaller GPUs), shrink it until it fits and remember the result."""
    from triton.runtime.errors import OutOfResources

    base = _block_config(q.shape[-1], kind, q.dtype)
    key = (kind, base["BLOCK_D"], q.dtype)
    cfg = base if kind in _config_override else _fitted_configs.get(key, base)
    while True:
        try:
            launch(cfg)
        except OutOfResources:
            cfg = _shrink(cfg)
            if cfg is None:
                raise
            continue
        if cfg is not base:
            _fitted_configs[key] = cfg
        return


# ----------------------------------------------------------------------------------------------------
# Plain-PyTorch path (CPU): packed inputs are padded, run, and packed again.
# ----------------------------------------------------------------------------------------------------


def _naive_forward(
    q,
    k,
    v,
    bias,
    key_bias,
    slopes,
    start_q,
    len_q,
    start_k,
    len_k,
    scale,
    causal,
    varlen,
    max_seqlen_q,
    max_seqlen_k,
):
    if not varlen:
        return naive.sigmoid_attn_forward_padded(q, k, v, len_q, len_k, bias, key_bias, slopes, scale, causal)
    cu_q, cu_k = _cu_from_starts(start_q, len_q), _cu_from_starts(start_k, len_k)
    max_seqlen_q, max_seqlen_k = _longest(len_q, max_seqlen_q), _longest(len_k, max_seqlen_k)
    qp, kp, vp = (
        unpack_to_padded(t[0], cu, m)
        for t, cu, m in ((q, cu_q, max_seqlen_q), (k, cu_k, max_seqlen_k), (v, cu_k, max_seqlen_k))
    )
    kbp = None if key_bias is None else unpack_to_padded(key_bias[0], cu_k, max_seqlen_k)
    out = naive.sigmoid_attn_forward_padded(qp, kp, vp, len_q, len_k, bias, kbp, slopes, scale, causal)
    return pack_padded(out, cu_q, q.shape[1]).unsqueeze(0)


def _naive_backward(
    dout,
    q,
    k,
    v,
    bias,
    key_bias,
    slopes,
    start_q,
    len_q,
    start_k,
    len_k,
    scale,
    causal,
    varlen,
    max_seqlen_q,
    max_seqlen_k,
):
    if not varlen:
        dq, dk, dv, dbias, dkb = naive.sigmoid_attn_backward_padded(
            dout, q, k, v, len_q, len_k, bias, key_bias, slopes, scale, causal
        )
        return dq, dk, dv, dbias, dkb if key_bias is not None else None
    cu_q, cu_k = _cu_from_starts(start_q, len_q), _cu_from_starts(start_k, len_k)
    max_seqlen_q, max_seqlen_k = _longest(len_q, max_seqlen_q), _longest(len_k, max_seqlen_k)
    pad_q = lambda t: unpack_to_padded(t[0], cu_q, max_seqlen_q)
    pad_k = lambda t: unpack_to_padded(t[0], cu_k, max_seqlen_k)
    kbp = None if key_bias is None else pad_k(key_bias)
    dq, dk, dv, dbias, dkb = naive.sigmoid_attn_backward_padded(
        pad_q(dout), pad_q(q), pad_k(k), pad_k(v), len_q, len_k, bias, kbp, slopes, scale, causal
    )
    packed_q = lambda t: pack_padded(t, cu_q, q.shape[1]).unsqueeze(0)
    packed_k = lambda t: pack_padded(t, cu_k, k.shape[1]).unsqueeze(0)
    dkb = None if key_bias is None else packed_k(dkb)
    return packed_q(dq), packed_k(dk), packed_k(dv), dbias, dkb


def _longest(lengths: torch.Tensor, bound: int) -> int:
    """The padded width the plain-PyTorch path needs: the longest sequence, not the caller's bound
    (``max_seqlen`` may be far larger; its cost grows with the square of the width). The lengths are
    read on the host: this path runs on the CPU, or on a GPU only as the tests' reference."""
    return min(bound, int(lengths.max())) if lengths.numel() else 0


def _cu_from_starts(start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    cu = torch.zeros(start.numel() + 1, dtype=torch.int32, device=start.device)
    cu[:-1] = start
    if length.numel():
        cu[-1] = start[-1] + length[-1]
    return cu


# ----------------------------------------------------------------------------------------------------
# Custom ops and autograd
# ----------------------------------------------------------------------------------------------------
# Both ops take the internal layout: q [B', rows, H, D], k / v [B', rows_k, Hkv, D] (B' = 1 when packed),
# bias [B, H] float32 (the whole per-head additive bias), key_bias [B', rows_k] float32 or None, slopes
# [B, H] float32 or None, and start / length int32 [B] per sequence.


def _forward_impl(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    key_bias: torch.Tensor | None,
    slopes: torch.Tensor | None,
    start_q: torch.Tensor,
    len_q: torch.Tensor,
    start_k: torch.Tensor,
    len_k: torch.Tensor,
    scale: float,
    causal: bool,
    varlen: bool,
    max_seqlen_q: int,
    max_seqlen_k: int,
    fast_sigmoid: bool,
) -> torch.Tensor:
    if _uses_triton(q):
        return _triton_forward(
            q,
            k,
            v,
            bias,
            key_bias,
            slopes,
            start_q,
            len_q,
            start_k,
            len_k,
            scale,
            causal,
            varlen,
            max_seqlen_q,
            fast_sigmoid,
        )
    out = _naive_forward(
        q,
        k,
        v,
        bias,
        key_bias,
        slopes,
        start_q,
        len_q,
        start_k,
        len_k,
        scale,
        causal,
        varlen,
        max_seqlen_q,
        max_seqlen_k,
    )
    return out.contiguous()  # the fake kernel promises contiguous outputs


# The ops are defined with torch.library's low-level API (define + impl) rather than
# ``torch.library.custom_op``: custom_op wraps every call in Python (dispatch to a per-device table,
# output-aliasing checks, an autograd wrapper), which on the H200 machine cost several hundred us of
# host time per call inside compiled models (benchmarks/profile_compiled_step.py), more than the kernels
# of short cells. Here the dispatcher calls the implementation directly.
_LIBRARY = torch.library.Library("sigcell", "DEF")


def _define_op(name: str, impl) -> torch._ops.OpOverload:
    """Register ``sigcell::name`` with the schema of ``impl`` (a pure function of its inputs)."""
    _LIBRARY.define(name + torch.library.infer_schema(impl, mutates_args=()))
    _LIBRARY.impl(name, impl, "CompositeExplicitAutograd")
    return getattr(torch.ops.sigcell, name).default


_sigmoid_attn_fwd = _define_op("sigmoid_attn_fwd", _forward_impl)


@torch.library.register_fake("sigcell::sigmoid_attn_fwd")
def _(
    q,
    k,
    v,
    bias,
    key_bias,
    slopes,
    start_q,
    len_q,
    start_k,
    len_k,
    scale,
    causal,
    varlen,
    max_seqlen_q,
    max_seqlen_k,
    fast_sigmoid,
):
    return q.new_empty(q.shape)


def _backward_impl(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    key_bias: torch.Tensor | None,
    slopes: torch.Tensor | None,
    start_q: torch.Tensor,
    len_q: torch.Tensor,
    start_k: torch.Tensor,
    len_k: torch.Tensor,
    scale: float,
    causal: bool,
    varlen: bool,
    max_seqlen_q: int,
    max_seqlen_k: int,
    fast_sigmoid: bool,
    need_dbias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv, d bias (empty unless ``need_dbias``: the default -log n bias takes no gradient, and its
    reduction costs launches) and d key_bias (empty without a key bias)."""
    args = (
        dout,
        q,
        k,
        v,
        bias,
        key_bias,
        slopes,
        start_q,
        len_q,
        start_k,
        len_k,
        scale,
        causal,
        varlen,
        max_seqlen_q,
        max_seqlen_k,
    )
    if _uses_triton(q):
        dq, dk, dv, dbias, dkb = _triton_backward(*args, fast_sigmoid, need_dbias)
    else:
        dq, dk, dv, dbias, dkb = _naive_backward(*args)
    dkb = dkb.to(bias.dtype).contiguous() if dkb is not None else bias.new_empty(0)
    dbias = dbias.to(bias.dtype).contiguous() if need_dbias else bias.new_empty(0)
    return dq.contiguous(), dk.contiguous(), dv.contiguous(), dbias, dkb


_sigmoid_attn_bwd = _define_op("sigmoid_attn_bwd", _backward_impl)


@torch.library.register_fake("sigcell::sigmoid_attn_bwd")
def _(
    dout,
    q,
    k,
    v,
    bias,
    key_bias,
    slopes,
    start_q,
    len_q,
    start_k,
    len_k,
    scale,
    causal,
    varlen,
    max_seqlen_q,
    max_seqlen_k,
    fast_sigmoid,
    need_dbias,
):
    dkb = bias.new_empty(key_bias.shape) if key_bias is not None else bias.new_empty(0)
    dbias = bias.new_empty(bias.shape) if need_dbias else bias.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), dbias, dkb


_TENSOR_INPUTS = ("q", "k", "v", "bias", "key_bias", "slopes", "start_q", "len_q", "start_k", "len_k")
_ATTRS = ("scale", "causal", "varlen", "max_seqlen_q", "max_seqlen_k", "fast_sigmoid")


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[: len(_TENSOR_INPUTS)])
    ctx.attrs = inputs[len(_TENSOR_INPUTS) :]
    ctx.has_key_bias = inputs[4] is not None


def _backward(ctx, dout, backward_fn=_sigmoid_attn_bwd):
    saved = ctx.saved_tensors
    need_dbias = ctx.needs_input_grad[3]
    dq, dk, dv, dbias, dkb = backward_fn(dout.contiguous(), *saved, *ctx.attrs, need_dbias)
    return (
        dq,
        dk,
        dv,
        dbias if need_dbias else None,
        dkb if ctx.has_key_bias else None,
        *([None] * (len(_TENSOR_INPUTS) - 5)),
        *([None] * len(_ATTRS)),
    )


torch.library.register_autograd("sigcell::sigmoid_attn_fwd", _backward, setup_context=_setup_context)


class _EagerSigmoidAttn(torch.autograd.Function):
    """The same forward and backward as the custom ops, without torch.library's dispatch: on the H200
    machine that dispatch took about 0.3 ms of Python per call (``benchmarks/profile_host.py``), as
    long as the kernel itself at L = 1k, so short calls were bound by the host."""

    @staticmethod
    def forward(ctx, *inputs):
        out = _forward_impl(*inputs)
        _setup_context(ctx, inputs, out)
        return out

    @staticmethod
    def backward(ctx, dout):
        return _backward(ctx, dout, _backward_impl)


def _attention(*inputs) -> torch.Tensor:
    """Eager GPU calls take the light autograd.Function; torch.compile (and every other device) sees
    the custom op, which it can trace without looking inside."""
    q = inputs[0]
    if _uses_triton(q) and not torch.compiler.is_compiling():
        return _EagerSigmoidAttn.apply(*inputs)
    return _sigmoid_attn_fwd(*inputs)


# ----------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------


def _fail(msg: str) -> None:
    raise ValueError(msg)


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rank: int, layout: str, fn: str) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            _fail(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != rank:
            _fail(f"{fn}: {name} must have {rank} dimensions {layout}, got shape {tuple(t.shape)}")
    if q.dtype not in (*_FLOAT_DTYPES, torch.float64):
        _fail(
            f"{fn}: q has dtype {q.dtype}; supported are bfloat16, float16 and float32 "
            "(and float64, which runs the plain-PyTorch path); cast the inputs with .to(torch.bfloat16)"
        )
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            _fail(f"{fn}: q, k and v must share one dtype, got q {q.dtype} and {name} {t.dtype}")
        if t.device != q.device:
            _fail(f"{fn}: q, k and v must be on one device, got q on {q.device} and {name} on {t.device}")
    if k.shape != v.shape:
        _fail(f"{fn}: k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    dim = q.shape[-1]
    if k.shape[-1] != dim:
        _fail(f"{fn}: q and k must share the head dim, got {dim} and {k.shape[-1]}")
    if not 1 <= dim <= MAX_HEAD_DIM:
        _fail(f"{fn}: head dim {dim} is not supported; sigcell supports 1..{MAX_HEAD_DIM}")
    heads, kv_heads = q.shape[-2], k.shape[-2]
    if kv_heads == 0 or heads % kv_heads:
        _fail(
            f"{fn}: the number of query heads ({heads}) must be a multiple of the number of KV heads "
            f"({kv_heads}) for grouped-query attention"
        )


def _check_lengths(name: str, lens: torch.Tensor, batch: int, max_len: int, device, fn: str) -> None:
    if not isinstance(lens, torch.Tensor):
        _fail(f"{fn}: {name} must be an int32 tensor of shape [{batch}], got {type(lens).__name__}")
    if lens.dtype != torch.int32:
        _fail(f"{fn}: {name} must have dtype torch.int32, got {lens.dtype}; pass {name}.to(torch.int32)")
    if tuple(lens.shape) != (batch,):
        _fail(f"{fn}: {name} must have shape [{batch}] (one length per sequence), got {tuple(lens.shape)}")
    if lens.device != device:
        _fail(f"{fn}: {name} is on {lens.device} but q is on {device}; move it with .to(q.device)")
    if _needs_value_check(lens, max_len):
        if batch and bool(((lens < 0) | (lens > max_len)).any()):
            _fail(
                f"{fn}: {name} must lie in [0, {max_len}], "
                f"got min {int(lens.min())} and max {int(lens.max())}"
            )
        _passed_value_check(lens, max_len)


def _check_cu_seqlens(name: str, cu: torch.Tensor, total: int, max_seqlen: int, device, fn: str) -> None:
    if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.numel() < 1:
        _fail(
            f"{fn}: {name} must be a 1-D int32 tensor of shape [B + 1], got "
            f"{tuple(cu.shape) if isinstance(cu, torch.Tensor) else type(cu).__name__}"
        )
    if cu.dtype != torch.int32:
        _fail(f"{fn}: {name} must have dtype torch.int32, got {cu.dtype}; pass {name}.to(torch.int32)")
    if cu.device != device:
        _fail(f"{fn}: {name} is on {cu.device} but q is on {device}; move it with .to(q.device)")
    if not _needs_value_check(cu, (total, max_seqlen)):
        return
    values = cu.tolist()
    if values[0] != 0:
        _fail(f"{fn}: {name} must start at 0, got {values[0]}")
    if any(b < a for a, b in itertools.pairwise(values)):
        _fail(f"{fn}: {name} must be non-decreasing (cumulative offsets), got {values[:8]}...")
    if values[-1] != total:
        _fail(f"{fn}: {name} must end at the number of packed tokens ({total}), got {values[-1]}")
    longest = max((b - a for a, b in itertools.pairwise(values)), default=0)
    if longest > max_seqlen:
        _fail(f"{fn}: max_seqlen for {name} is {max_seqlen} but the longest sequence has {longest} tokens")
    _passed_value_check(cu, (total, max_seqlen))


# That a caller's GPU tensor of lengths / offsets passed the value check, remembered while the tensor is
# alive and unchanged: the check reads values on the host, a device sync, so a tensor passed to every layer
# of a model is checked once, not per layer; an in-place change through torch bumps its version and checks
# again. Only the check is remembered: the bias and lengths derived from the values are computed on every
# call, so results never depend on this memo (a write torch cannot see, e.g. through ``.data``, can only
# skip the re-check of a value that was valid before). CPU tensors are never remembered: their values cost
# nothing to read. Keyed by (id(), what) with a weak reference (tensors compare elementwise: no dict keys).
_per_tensor: dict[tuple, tuple[weakref.ref, tuple[int, int], object]] = {}


def _recall(t: torch.Tensor, what: tuple) -> object | None:
    """What :func:`_remember` stored for ``t`` under ``what``, or None if ``t`` changed since."""
    if not t.is_cuda:
        return None
    entry = _per_tensor.get((id(t), *what))
    if entry is not None and entry[0]() is t and entry[1] == (t._version, t.data_ptr()):
        return entry[2]
    return None


def _remember(t: torch.Tensor, what: tuple, value: object) -> None:
    if not t.is_cuda:
        return
    key = (id(t), *what)
    # The table is bound as a default: at interpreter exit the module's globals may already be None.
    ref = weakref.ref(t, lambda _, key=key, table=_per_tensor: table.pop(key, None))
    _per_tensor[key] = (ref, (t._version, t.data_ptr()), value)


def _needs_value_check(t: torch.Tensor, against: object) -> bool:
    """True when ``t``'s values must be checked now (see :func:`_passed_value_check`)."""
    if torch.compiler.is_compiling():  # values are not available while torch.compile traces
        return False
    return _recall(t, ("checked",)) != against


def _passed_value_check(t: torch.Tensor, against: object) -> None:
    if not torch.compiler.is_compiling():
        _remember(t, ("checked",), against)


def _param_dtype(dtype: torch.dtype) -> torch.dtype:
    """Biases and slopes are float32, or float64 for float64 inputs (the reference)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _head_bias(
    bias, lens_k: torch.Tensor, heads: int, q: torch.Tensor, fn: str, all_keys: int | None = None
) -> torch.Tensor:
    """The additive bias per (sequence, head) as float32 ``[B, H]``. ``all_keys``: every sequence has
    this many keys (no lengths were passed; ``lens_k`` is sigcell's own constant)."""
    device, dtype = q.device, _param_dtype(q.dtype)
    if bias is None:

        def make():
            return torch.log(lens_k.clamp(min=1).to(dtype)).neg_().unsqueeze(1).expand(-1, heads).contiguous()

        if all_keys is not None:  # from a constant only sigcell holds: made once per shape
            return _cached(("log_bias", lens_k.numel(), all_keys, heads, dtype), device, make)
        # From the caller's lengths: derived on every call, never remembered per tensor (a write torch
        # cannot see, through ``.data`` or DLPack, would leave a remembered bias stale, the output wrong).
        return make()
    if isinstance(bias, torch.Tensor):
        if tuple(bias.shape) != (heads,):
            _fail(
                f"{fn}: a tensor bias must have shape [H] = [{heads}] (one per query head), "
                f"got {tuple(bias.shape)}; pass a float for one bias shared by all heads"
            )
        if bias.device != device:
            _fail(f"{fn}: bias is on {bias.device} but q is on {device}")
        return bias.to(dtype).unsqueeze(0).expand(lens_k.numel(), -1).contiguous()
    if isinstance(bias, (int, float)) and math.isfinite(bias):
        return torch.full((lens_k.numel(), heads), float(bias), dtype=dtype, device=device)
    _fail(
        f"{fn}: bias must be None (-log of the number of keys), a finite float, or a tensor of shape [H]; "
        f"got {bias!r}"
    )
    raise AssertionError  # unreachable


def _alibi(slopes, batch: int, heads: int, q: torch.Tensor, fn: str) -> torch.Tensor | None:
    device = q.device
    if slopes is None:
        return None
    if not isinstance(slopes, torch.Tensor) or tuple(slopes.shape) not in ((heads,), (batch, heads)):
        shape = tuple(slopes.shape) if isinstance(slopes, torch.Tensor) else type(slopes).__name__
        _fail(
            f"{fn}: alibi_slopes must be a tensor of shape [H] = [{heads}] or [B, H] = [{batch}, {heads}], "
            f"got {shape}"
        )
    if slopes.device != device:
        _fail(f"{fn}: alibi_slopes is on {slopes.device} but q is on {device}")
    return slopes.detach().to(_param_dtype(q.dtype)).expand(batch, heads).contiguous()


def _key_bias(
    key_bias, expected: tuple[int, ...], q: torch.Tensor, fn: str, layout: str
) -> torch.Tensor | None:
    device = q.device
    if key_bias is None:
        return None
    if not isinstance(key_bias, torch.Tensor) or tuple(key_bias.shape) != expected:
        shape = tuple(key_bias.shape) if isinstance(key_bias, torch.Tensor) else type(key_bias).__name__
        _fail(f"{fn}: key_bias must have shape {layout} = {list(expected)}, got {shape}")
    if not key_bias.is_floating_point():
        _fail(f"{fn}: key_bias must be a floating-point tensor, got {key_bias.dtype}")
    if key_bias.device != device:
        _fail(f"{fn}: key_bias is on {key_bias.device} but q is on {device}")
    return key_bias.to(_param_dtype(q.dtype))


def _resolve_scale(scale: float | None, dim: int, fn: str) -> float:
    if scale is None:
        return 1.0 / math.sqrt(dim)
    if not isinstance(scale, (int, float)) or not math.isfinite(scale):
        _fail(f"{fn}: scale must be a finite float or None (1/sqrt(head dim)), got {scale!r}")
    return float(scale)


def _resolve_fast(fast_sigmoid: bool | None, dtype: torch.dtype) -> bool:
    # tanh.approx costs one special-function op per score; float32 callers get the accurate path.
    return dtype != torch.float32 if fast_sigmoid is None else bool(fast_sigmoid)


# ----------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------


def sigmoid_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    bias: float | torch.Tensor | None = None,
    causal: bool = False,
    seq_lens_q: torch.Tensor | None = None,
    seq_lens_k: torch.Tensor | None = None,
    key_bias: torch.Tensor | None = None,
    alibi_slopes: torch.Tensor | None = None,
    fast_sigmoid: bool | None = None,
) -> torch.Tensor:
    r"""Sigmoid attention on a (right-)padded batch.

    ``out[b, i, h] = sum_j sigmoid(s_ij) v_j`` with
    ``s_ij = scale * q_i . k_j + bias + key_bias[b, j] - slope_h * |i + Lk - Lq - j|``
    over the valid keys ``j < Lk_b`` (and, if causal, ``j <= i + Lk_b - Lq_b``) of sequence ``b``;
    ``Lq_b`` and ``Lk_b`` are the sequence's lengths. Rows of padded queries (``i >= Lq_b``) are exactly 0.

    Causal masks are aligned to the bottom-right corner, as in flash-attn. For ``Lq = 2, Lk = 5``
    (1 = attended)::

        1 1 1 1 0
        1 1 1 1 1

    and for ``Lq = 5, Lk = 2`` the first three queries see no key and output 0::

        0 0
        0 0
        0 0
        1 0
        1 1

    Parameters
    ----------
    q
        Queries ``[B, Lq, H, D]``; bfloat16, float16 or float32 (float64 runs the plain-PyTorch path,
        on any device); any strides.
    k, v
        Keys and values ``[B, Lk, Hkv, D]``, ``H % Hkv == 0`` (grouped-query / multi-query attention).
    scale
        Multiplier of ``q . k``; ``None`` means ``1 / sqrt(D)``.
    bias
        ``None``: ``-log(n_k)`` with ``n_k`` the number of valid keys of each sequence (so padding never
        changes a result); a float; or a tensor ``[H]`` (one per query head; receives a gradient).
    causal
        Mask future keys (bottom-right aligned, see above).
    seq_lens_q, seq_lens_k
        int32 ``[B]`` valid lengths (right padding). ``None`` means every row is valid.
    key_bias
        Optional additive bias per key ``[B, Lk]`` (any float dtype); receives a gradient.
    alibi_slopes
        Optional ALiBi slopes ``[H]`` or ``[B, H]`` (float32; no gradient); the penalty is
        ``slope * |i + Lk - Lq - j|`` as in flash-attn.
    fast_sigmoid
        ``True``: one hardware ``tanh.approx`` per score (CUDA); ``False``: the accurate
        ``1 / (1 + exp(-x))``; ``None``: fast for 16-bit inputs, accurate for float32.

    Returns
    -------
    Tensor ``[B, Lq, H, D]`` in q's dtype.
    """
    fn = "sigmoid_attn_func"
    _check_qkv(q, k, v, 4, "[B, L, H, D]", fn)
    batch, lq, heads, dim = q.shape
    lk = k.shape[1]
    if k.shape[0] != batch:
        _fail(f"{fn}: q and k must have the same batch size, got {batch} and {k.shape[0]}")
    lens_q = _dense_lengths("seq_lens_q", seq_lens_q, batch, lq, q.device, fn)
    lens_k = _dense_lengths("seq_lens_k", seq_lens_k, batch, lk, q.device, fn)
    starts = _constant_lengths(batch, 0, q.device)
    return _attention(
        q,
        k,
        v,
        _head_bias(bias, lens_k, heads, q, fn, all_keys=lk if seq_lens_k is None else None),
        _key_bias(key_bias, (batch, lk), q, fn, "[B, Lk]"),
        _alibi(alibi_slopes, batch, heads, q, fn),
        starts,
        lens_q,
        starts,
        lens_k,
        _resolve_scale(scale, dim, fn),
        bool(causal),
        False,
        lq,
        lk,
        _resolve_fast(fast_sigmoid, q.dtype),
    )


# Small constant tensors of the dense path (lengths, starts), made once per shape:
# each costs a launch and some Python per call otherwise (measured in benchmarks/profile_host.py).
_constants: dict[tuple, torch.Tensor] = {}
_MAX_CONSTANTS = 256


def _cached(key: tuple, device: torch.device, make) -> torch.Tensor:
    """``make()`` (a tensor on ``device``), remembered under ``(key, device)``; not while torch.compile
    traces or a CUDA graph captures (a tensor made there belongs to the trace or to the graph's pool)."""
    # is_compiling first: torch.compile must never see the CUDA query (a graph break per call).
    if torch.compiler.is_compiling() or (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        return make()
    key = (*key, device)
    tensor = _constants.get(key)
    if tensor is None:
        if len(_constants) >= _MAX_CONSTANTS:
            _constants.clear()
        tensor = _constants[key] = make()
    return tensor


def _constant_lengths(batch: int, value: int, device: torch.device) -> torch.Tensor:
    """int32 ``[batch]`` filled with ``value`` (never written to by sigcell)."""

    def make():
        return torch.full((batch,), value, dtype=torch.int32, device=device)

    return _cached(("lengths", batch, value), device, make)


def _dense_lengths(name, lens, batch, max_len, device, fn) -> torch.Tensor:
    if lens is None:
        return _constant_lengths(batch, max_len, device)
    _check_lengths(name, lens, batch, max_len, device, fn)
    return lens


def sigmoid_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    scale: float | None = None,
    bias: float | torch.Tensor | None = None,
    causal: bool = False,
    key_bias: torch.Tensor | None = None,
    alibi_slopes: torch.Tensor | None = None,
    fast_sigmoid: bool | None = None,
) -> torch.Tensor:
    """Sigmoid attention on packed sequences (no attention across sequences).

    Same function as :func:`sigmoid_attn_func`, sequence by sequence, with ``Lq_b`` / ``Lk_b`` given by
    the offsets. ``bias=None`` means ``-log(Lk_b)`` per sequence.

    Parameters
    ----------
    q
        Packed queries ``[Tq, H, D]``.
    k, v
        Packed keys and values ``[Tk, Hkv, D]``.
    cu_seqlens_q, cu_seqlens_k
        int32 ``[B + 1]`` cumulative offsets: sequence ``b`` is rows ``cu[b]:cu[b + 1]``; start at 0, end at
        ``Tq`` / ``Tk``.
    max_seqlen_q, max_seqlen_k
        Upper bounds of the sequence lengths (sizes the launch grid).
    scale, bias, causal, alibi_slopes, fast_sigmoid
        As in :func:`sigmoid_attn_func`.
    key_bias
        Optional additive bias per packed key ``[Tk]``; receives a gradient.

    Returns
    -------
    Tensor ``[Tq, H, D]`` in q's dtype.
    """
    fn = "sigmoid_attn_varlen_func"
    _check_qkv(q, k, v, 3, "[T, H, D]", fn)
    total_q, heads, dim = q.shape
    total_k = k.shape[0]
    for name, value in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            _fail(f"{fn}: {name} must be a non-negative int, got {value!r}")
    _check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, total_q, max_seqlen_q, q.device, fn)
    _check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, total_k, max_seqlen_k, q.device, fn)
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        _fail(
            f"{fn}: cu_seqlens_q and cu_seqlens_k must describe the same number of sequences, got "
            f"{cu_seqlens_q.numel() - 1} and {cu_seqlens_k.numel() - 1}"
        )
    batch = cu_seqlens_q.numel() - 1
    # Afresh on every call (see _head_bias): results never depend on a remembered copy of the offsets.
    lens_q = lengths_from_cu_seqlens(cu_seqlens_q)
    lens_k = lens_q if cu_seqlens_k is cu_seqlens_q else lengths_from_cu_seqlens(cu_seqlens_k)
    kb = _key_bias(key_bias, (total_k,), q, fn, "[Tk]")
    out = _attention(
        q.unsqueeze(0),
        k.unsqueeze(0),
        v.unsqueeze(0),
        _head_bias(bias, lens_k, heads, q, fn),
        None if kb is None else kb.unsqueeze(0),
        _alibi(alibi_slopes, batch, heads, q, fn),
        cu_seqlens_q[:-1].contiguous(),
        lens_q,
        cu_seqlens_k[:-1].contiguous(),
        lens_k,
        _resolve_scale(scale, dim, fn),
        bool(causal),
        True,
        int(max_seqlen_q),
        int(max_seqlen_k),
        _resolve_fast(fast_sigmoid, q.dtype),
    )
    return out.squeeze(0)
