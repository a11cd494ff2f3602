"""The attention implementations the kernel benchmark compares (``providers``).

Each provider builds, for one :class:`~sigcell.bench.cases.Case`, a :class:`Workload`: fresh inputs in its
own native layout and a forward closure. A provider that cannot run here says why
(:meth:`Provider.unavailable`) and is skipped with that reason; one that does not apply to a case (a dense
kernel on a padded batch) is left out of that case quietly.

Peers that have no way to skip padding (torch SDPA) run the dense ``[B, L]`` shape of a padded case; their
TFLOPS still count the valid tokens only, so every TFLOPS number is comparable ("effective TFLOPS").
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import math
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sigcell.bench.cases import Case

__all__ = [
    "PROVIDERS",
    "PROVIDER_GROUPS",
    "Provider",
    "Workload",
    "load_tritonsigmoid",
    "resolve_providers",
]


@dataclass
class Workload:
    """What one provider runs for one case: ``fwd()`` returns the attention output.

    ``inputs`` are the tensors the backward differentiates (they require grad when the mode has a backward);
    ``computed_lengths`` is set when the provider computes more than the valid tokens (e.g. the dense shape).
    """

    fwd: Callable[[], torch.Tensor]
    inputs: tuple[torch.Tensor, ...]
    computed_lengths: tuple[int, ...] | None = None
    note: str | None = None


class Provider:
    """Base class: a named attention implementation.

    Attributes
    ----------
    name
        Identifier used on the command line and in the results.
    attention
        ``"sigmoid"`` or ``"softmax"``.
    sigcell
        Whether this is one of sigcell's own entry points (the others are peers).
    """

    name: str = ""
    attention: str = "sigmoid"
    sigcell: bool = False

    def unavailable(self, device: torch.device) -> str | None:
        """Why this provider cannot run on ``device`` (``None`` if it can)."""
        return None

    def applies(self, case: Case) -> bool:
        """Whether the provider runs this case at all (dense-only kernels skip padded batches)."""
        return True

    def build(self, case: Case, device: torch.device, dtype: torch.dtype, grad: bool, seed: int) -> Workload:
        """Allocate inputs for ``case`` and return the forward closure."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------


def _randn(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, gen: torch.Generator,
           grad: bool) -> torch.Tensor:
    t = torch.randn(shape, device=device, dtype=torch.float32, generator=gen).to(dtype)
    return t.requires_grad_(grad)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def _qkv_bshd(case: Case, device, dtype, grad, seed) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as ``[B, L, H, D]`` (sigcell's and TritonSigmoid's layout)."""
    gen = _generator(device, seed)
    shape = (case.batch, case.seq_len, case.heads, case.head_dim)
    return tuple(_randn(shape, device, dtype, gen, grad) for _ in range(3))  # type: ignore[return-value]


def _qkv_bhsd(case: Case, device, dtype, grad, seed) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as contiguous ``[B, H, L, D]`` (torch SDPA's and FlexAttention's native layout)."""
    gen = _generator(device, seed)
    shape = (case.batch, case.heads, case.seq_len, case.head_dim)
    return tuple(_randn(shape, device, dtype, gen, grad) for _ in range(3))  # type: ignore[return-value]


def _lengths(case: Case, device) -> torch.Tensor:
    return torch.tensor(case.lengths, dtype=torch.int32, device=device)


# ----------------------------------------------------------------------------------------------------
# sigcell
# ----------------------------------------------------------------------------------------------------


class _SigcellBase(Provider):
    attention = "sigmoid"
    sigcell = True

    def unavailable(self, device: torch.device) -> str | None:
        try:
            importlib.import_module("sigcell.ops")
        except Exception as err:  # any import failure is a reason to skip, reported as-is
            return f"sigcell.ops does not import: {type(err).__name__}: {err}"
        return None


class SigcellDense(_SigcellBase):
    """``sigmoid_attn_func`` without lengths (every token valid)."""

    name = "sigcell-dense"

    def applies(self, case: Case) -> bool:
        return not case.is_padded

    def build(self, case, device, dtype, grad, seed):
        from sigcell import sigmoid_attn_func

        q, k, v = _qkv_bshd(case, device, dtype, grad, seed)
        return Workload(lambda: sigmoid_attn_func(q, k, v, causal=case.causal), (q, k, v))


class SigcellPadded(_SigcellBase):
    """``sigmoid_attn_func`` on a right-padded batch with int32 ``seq_lens_q`` / ``seq_lens_k``."""

    name = "sigcell-padded"

    def build(self, case, device, dtype, grad, seed):
        from sigcell import sigmoid_attn_func

        q, k, v = _qkv_bshd(case, device, dtype, grad, seed)
        lens = _lengths(case, device)
        fwd = lambda: sigmoid_attn_func(q, k, v, causal=case.causal, seq_lens_q=lens, seq_lens_k=lens)
        return Workload(fwd, (q, k, v))


class SigcellVarlen(_SigcellBase):
    """``sigmoid_attn_varlen_func`` on packed ``[T, H, D]`` tokens with int32 ``cu_seqlens``."""

    name = "sigcell-varlen"

    def build(self, case, device, dtype, grad, seed):
        from sigcell import sigmoid_attn_varlen_func
        from sigcell.ops import cu_seqlens_from_lengths

        gen = _generator(device, seed)
        shape = (case.valid_tokens, case.heads, case.head_dim)
        q, k, v = (_randn(shape, device, dtype, gen, grad) for _ in range(3))
        cu = cu_seqlens_from_lengths(_lengths(case, device))
        longest = max(case.lengths)
        fwd = lambda: sigmoid_attn_varlen_func(q, k, v, cu, cu, longest, longest, causal=case.causal)
        return Workload(fwd, (q, k, v))


# ----------------------------------------------------------------------------------------------------
# Plain-PyTorch sigmoid (sigcell's reference / CPU path), usable on any device
# ----------------------------------------------------------------------------------------------------


class _PlainSigmoidFunction(torch.autograd.Function):
    """Autograd around the block-wise plain-PyTorch forward and hand-written backward of ``naive.py``."""

    @staticmethod
    def forward(ctx, q, k, v, lens, bias, scale, causal):
        from sigcell.ops.sigmoid_attn import naive

        ctx.save_for_backward(q, k, v, lens, bias)
        ctx.scale, ctx.causal = scale, causal
        return naive.sigmoid_attn_forward_padded(q, k, v, lens, lens, bias, None, None, scale, causal)

    @staticmethod
    def backward(ctx, dout):
        from sigcell.ops.sigmoid_attn import naive

        q, k, v, lens, bias = ctx.saved_tensors
        dq, dk, dv, _, _ = naive.sigmoid_attn_backward_padded(
            dout, q, k, v, lens, lens, bias, None, None, ctx.scale, ctx.causal)
        return dq, dk, dv, None, None, None, None


def plain_sigmoid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lens: torch.Tensor, *,
                            causal: bool) -> torch.Tensor:
    """Plain-PyTorch sigmoid attention with sigcell's defaults (scale ``1/sqrt(D)``, bias ``-log(n_k)``).

    Shapes: q, k, v ``[B, L, H, D]``; lens int32 ``[B]``. Returns ``[B, L, H, D]``.
    """
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    bias = (-torch.log(lens.clamp(min=1).to(acc))).unsqueeze(1).expand(-1, q.shape[2]).contiguous()
    return _PlainSigmoidFunction.apply(q, k, v, lens, bias, 1.0 / math.sqrt(q.shape[-1]), causal)


class TorchSigmoid(Provider):
    """Plain-PyTorch sigmoid attention (sigcell's reference path), block-wise, on the benchmark's device."""

    name = "torch-sigmoid"

    def build(self, case, device, dtype, grad, seed):
        q, k, v = _qkv_bshd(case, device, dtype, grad, seed)
        lens = _lengths(case, device)
        return Workload(lambda: plain_sigmoid_attention(q, k, v, lens, causal=case.causal), (q, k, v))


# ----------------------------------------------------------------------------------------------------
# TritonSigmoid (optional peer; never a dependency)
# ----------------------------------------------------------------------------------------------------

_TRITONSIGMOID_ENV = "SIGCELL_BENCH_TRITONSIGMOID"
_tritonsigmoid_cache: dict[str, tuple[object | None, str]] = {}


def _add_wheel_to_path(path: Path) -> None:
    """Make a package importable from a wheel file (unpacked to a temporary folder) or an unpacked folder."""
    if path.is_dir():
        sys.path.insert(0, str(path))
        return
    target = Path(tempfile.mkdtemp(prefix="sigcell-bench-peer-"))
    with zipfile.ZipFile(path) as wheel:
        wheel.extractall(target)
    sys.path.insert(0, str(target))


def load_tritonsigmoid(path: str | None = None) -> tuple[object | None, str]:
    """Import TritonSigmoid (PyPI ``triton-sigmoid``) if it can be found; it is never installed by sigcell.

    Looks, in order, for an installed ``triton_sigmoid``, then ``path`` (or ``$SIGCELL_BENCH_TRITONSIGMOID``),
    then ``.whl/triton_sigmoid-*.whl`` under the current folder; a wheel is unpacked to a temporary folder.

    Returns
    -------
    (module or None, version string or the reason it is unavailable)
    """
    path = path or os.environ.get(_TRITONSIGMOID_ENV)
    key = str(path)
    if key in _tritonsigmoid_cache:
        return _tritonsigmoid_cache[key]
    if not torch.cuda.is_available():
        result: tuple[object | None, str] = (None, "TritonSigmoid needs a CUDA GPU")
        _tritonsigmoid_cache[key] = result
        return result
    source = "installed"
    if importlib.util.find_spec("triton_sigmoid") is None:
        candidates = [Path(path)] if path else sorted(Path(".whl").glob("triton_sigmoid-*.whl"))
        if not candidates or not candidates[-1].exists():
            reason = ("triton-sigmoid is not installed (optional peer): `pip download triton-sigmoid==0.1.2 "
                      "--no-deps -d .whl` and rerun from that folder, or pass --tritonsigmoid PATH")
            _tritonsigmoid_cache[key] = (None, reason)
            return None, reason
        _add_wheel_to_path(candidates[-1])
        source = str(candidates[-1])
    try:
        module = importlib.import_module("triton_sigmoid")
    except Exception as err:  # the package raises RuntimeError on unsupported GPUs; report whatever it says
        result = (None, f"triton_sigmoid does not import: {type(err).__name__}: {err}")
    else:
        try:
            version = importlib.metadata.version("triton-sigmoid")
        except importlib.metadata.PackageNotFoundError:
            version = Path(source).name.split("-")[1] if source.endswith(".whl") else "unknown"
        result = (module, f"{version} ({source})")
    _tritonsigmoid_cache[key] = result
    return result


class _TritonSigmoidBase(Provider):
    attention = "sigmoid"
    path: str | None = None  # set from --tritonsigmoid

    def unavailable(self, device: torch.device) -> str | None:
        if device.type != "cuda":
            return "TritonSigmoid needs a CUDA GPU"
        module, why = load_tritonsigmoid(self.path)
        if module is None:
            return why
        if "PYTEST_VERSION" in os.environ:
            return ("PYTEST_VERSION is set: TritonSigmoid would autotune over a single test config; "
                    "run outside pytest")
        return None

    def _module(self):
        module, why = load_tritonsigmoid(self.path)
        if module is None:
            raise RuntimeError(why)
        return module


class TritonSigmoidDense(_TritonSigmoidBase):
    """TritonSigmoid 0.1.2 ``sigmoid_attention`` (same-length sequences)."""

    name = "tritonsigmoid-dense"

    def applies(self, case: Case) -> bool:
        return not case.is_padded

    def build(self, case, device, dtype, grad, seed):
        attn = self._module().sigmoid_attention
        q, k, v = _qkv_bshd(case, device, dtype, grad, seed)
        return Workload(lambda: attn(q, k, v, is_causal=case.causal), (q, k, v))


class TritonSigmoidPadded(_TritonSigmoidBase):
    """TritonSigmoid 0.1.2 ``sigmoid_attention_padded`` (trailing padding with int32 lengths)."""

    name = "tritonsigmoid-padded"

    def applies(self, case: Case) -> bool:
        return case.is_padded

    def build(self, case, device, dtype, grad, seed):
        attn = self._module().sigmoid_attention_padded
        q, k, v = _qkv_bshd(case, device, dtype, grad, seed)
        lens = _lengths(case, device)
        fwd = lambda: attn(q, k, v, seq_lens_k=lens, seq_lens_q=lens, is_causal=case.causal)
        return Workload(fwd, (q, k, v))


# ----------------------------------------------------------------------------------------------------
# torch SDPA (softmax), one backend at a time
# ----------------------------------------------------------------------------------------------------


class SdpaBackend(Provider):
    """``torch.nn.functional.scaled_dot_product_attention`` restricted to one backend."""

    attention = "softmax"

    def __init__(self, name: str, backend: str, needs_cuda: bool = True) -> None:
        self.name, self.backend, self.needs_cuda = name, backend, needs_cuda

    def unavailable(self, device: torch.device) -> str | None:
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: F401
        except ImportError as err:
            return f"torch.nn.attention.sdpa_kernel is missing in torch {torch.__version__}: {err}"
        if not hasattr(SDPBackend, self.backend):
            return f"torch {torch.__version__} has no SDPA backend {self.backend}"
        if self.needs_cuda and device.type != "cuda":
            return f"SDPA backend {self.backend} needs a CUDA GPU"
        return None

    def build(self, case, device, dtype, grad, seed):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.nn.functional import scaled_dot_product_attention as sdpa

        backend = getattr(SDPBackend, self.backend)
        q, k, v = _qkv_bhsd(case, device, dtype, grad, seed)

        def fwd() -> torch.Tensor:
            with sdpa_kernel([backend]):
                return sdpa(q, k, v, is_causal=case.causal)

        if not case.is_padded:
            return Workload(fwd, (q, k, v))
        note = "SDPA has no varlen / padding-skipping path: ran the dense [B, L] shape; TFLOPS: valid tokens"
        return Workload(fwd, (q, k, v), computed_lengths=(case.seq_len,) * case.batch, note=note)


# ----------------------------------------------------------------------------------------------------
# FlexAttention (softmax), compiled; padding and causality through a block mask
# ----------------------------------------------------------------------------------------------------


def _raise_recompile_limits() -> None:
    """Every shape compiles its own FlexAttention kernel; keep dynamo from falling back to eager after 8."""
    import torch._dynamo.config as dynamo_config

    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                 "accumulated_recompile_limit"):
        if hasattr(dynamo_config, name):
            with contextlib.suppress(Exception):
                setattr(dynamo_config, name, max(getattr(dynamo_config, name), 4096))


class FlexAttention(Provider):
    """``torch.nn.attention.flex_attention`` under ``torch.compile`` (softmax), with a padding block mask."""

    name = "flex"
    attention = "softmax"
    _compiled: Callable | None = None

    def unavailable(self, device: torch.device) -> str | None:
        if device.type != "cuda":
            return "FlexAttention is benchmarked on CUDA only (on CPU it needs an inductor C++ toolchain)"
        try:
            importlib.import_module("torch.nn.attention.flex_attention")
        except ImportError as err:
            return f"torch {torch.__version__} has no FlexAttention: {err}"
        return None

    def build(self, case, device, dtype, grad, seed):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        if FlexAttention._compiled is None:
            _raise_recompile_limits()
            FlexAttention._compiled = torch.compile(flex_attention, dynamic=False)
        compiled = FlexAttention._compiled
        q, k, v = _qkv_bhsd(case, device, dtype, grad, seed)
        block_mask = None
        if case.is_padded or case.causal:
            lens = _lengths(case, device)
            causal, padded = case.causal, case.is_padded

            def mask_mod(b, h, q_idx, kv_idx):
                keep = kv_idx <= q_idx if causal else q_idx >= 0
                if padded:
                    keep = keep & (q_idx < lens[b]) & (kv_idx < lens[b])
                return keep

            block_mask = create_block_mask(mask_mod, case.batch, None, case.seq_len, case.seq_len,
                                           device=str(device))
        return Workload(lambda: compiled(q, k, v, block_mask=block_mask), (q, k, v))


# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------

PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        SigcellDense(), SigcellPadded(), SigcellVarlen(),
        TritonSigmoidDense(), TritonSigmoidPadded(),
        SdpaBackend("sdpa-flash", "FLASH_ATTENTION"),
        SdpaBackend("sdpa-cudnn", "CUDNN_ATTENTION"),
        SdpaBackend("sdpa-efficient", "EFFICIENT_ATTENTION"),
        SdpaBackend("sdpa-math", "MATH", needs_cuda=False),
        FlexAttention(),
        TorchSigmoid(),
    )
}

# Groups usable in --providers. "default" leaves out FlexAttention (a torch.compile per shape) and the SDPA
# math backend (materializes L x L) on CUDA; on the CPU the math backend is the softmax peer.
PROVIDER_GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(PROVIDERS),
    "sigcell": ("sigcell-dense", "sigcell-padded", "sigcell-varlen"),
    "tritonsigmoid": ("tritonsigmoid-dense", "tritonsigmoid-padded"),
    "sdpa": ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math"),
    "peers": tuple(n for n, p in PROVIDERS.items() if not p.sigcell),
}


def _default_group(device: torch.device) -> tuple[str, ...]:
    left_out = {"flex", "sdpa-math"} if device.type == "cuda" else {"flex"}
    return tuple(n for n in PROVIDERS if n not in left_out)


def resolve_providers(spec: list[str] | tuple[str, ...], device: torch.device,
                      exclude: list[str] | tuple[str, ...] = ()) -> list[Provider]:
    """Expand provider names and groups (default, all, sigcell, tritonsigmoid, sdpa, peers).

    Parameters
    ----------
    spec
        Names or groups, in any order; duplicates are dropped, registry order is kept.
    device
        The device the run uses (``default`` depends on it).
    exclude
        Names or groups to leave out.

    Returns
    -------
    list of :class:`Provider`.
    """
    def expand(items) -> set[str]:
        names: set[str] = set()
        for item in items:
            item = item.strip()
            if not item:
                continue
            if item == "default":
                names.update(_default_group(device))
            elif item in PROVIDER_GROUPS:
                names.update(PROVIDER_GROUPS[item])
            elif item in PROVIDERS:
                names.add(item)
            else:
                choices = sorted(PROVIDERS) + sorted(PROVIDER_GROUPS) + ["default"]
                msg = f"unknown provider {item!r}; choose from {', '.join(choices)}"
                raise ValueError(msg)
        return names

    chosen = expand(spec) - expand(exclude)
    if not chosen:
        msg = f"no provider left to run (asked for {list(spec)}, excluded {list(exclude)})"
        raise ValueError(msg)
    return [p for n, p in PROVIDERS.items() if n in chosen]
