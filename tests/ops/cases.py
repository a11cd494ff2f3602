"""Random sigmoid-attention problems and their float64 reference, shared by the op tests."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from sigcell import sigmoid_attn_func, sigmoid_attn_varlen_func
from sigcell.ops import cu_seqlens_from_lengths

# Relative-error bounds against float64, per input dtype (outputs and gradients).
TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 5e-3, torch.float32: 1e-4, torch.float64: 1e-10}


@dataclass
class Case:
    """One problem: inputs in float64 (cast per run), the layout and the op's keyword arguments."""

    layout: str  # "padded" | "varlen"
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    dout: torch.Tensor
    lens_q: torch.Tensor  # int32 [B]
    lens_k: torch.Tensor  # int32 [B]
    causal: bool
    key_bias: torch.Tensor | None
    head_bias: torch.Tensor | float | None
    alibi: torch.Tensor | None
    scale: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def max_q(self) -> int:
        return int(self.lens_q.max()) if self.lens_q.numel() else 0

    @property
    def max_k(self) -> int:
        return int(self.lens_k.max()) if self.lens_k.numel() else 0


def make_case(
    seed: int,
    *,
    layout: str = "padded",
    batch: int = 3,
    lq: int = 37,
    lk: int | None = None,
    heads: int = 4,
    kv_heads: int = 2,
    dim: int = 16,
    causal: bool = False,
    bias_mode: str = "none",
    key_bias: bool = True,
    alibi: bool = False,
    lens_q: list[int] | None = None,
    lens_k: list[int] | None = None,
    logit_scale: float = 1.0,
    device: str = "cpu",
) -> Case:
    """Draw a fresh random problem. Lengths include a full-length and an empty sequence by default."""
    gen = torch.Generator().manual_seed(seed)
    lk = lq + 3 if lk is None else lk

    def lengths(given, full):
        if given is not None:
            return torch.tensor(given, dtype=torch.int32)
        out = torch.randint(1, full + 1, (batch,), generator=gen, dtype=torch.int32)
        out[0] = full
        if batch > 2:
            out[-1] = 0
        return out

    lq_t, lk_t = lengths(lens_q, lq), lengths(lens_k, lk)
    batch = lq_t.numel()
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)
    if layout == "padded":
        q, dout = rand(batch, lq, heads, dim), rand(batch, lq, heads, dim)
        k, v = rand(batch, lk, kv_heads, dim), rand(batch, lk, kv_heads, dim)
        kb = rand(batch, lk) if key_bias else None
    else:
        tq, tk = int(lq_t.sum()), int(lk_t.sum())
        q, dout = rand(tq, heads, dim), rand(tq, heads, dim)
        k, v = rand(tk, kv_heads, dim), rand(tk, kv_heads, dim)
        kb = rand(tk) if key_bias else None
    q = q * logit_scale
    head_bias = {"none": None, "float": -1.5, "tensor": rand(heads) - 2.0}[bias_mode]
    slopes = torch.rand(heads, generator=gen, dtype=torch.float64) * 0.2 if alibi else None
    move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t
    return Case(
        layout,
        move(q),
        move(k),
        move(v),
        move(dout),
        move(lq_t),
        move(lk_t),
        causal,
        move(kb),
        move(head_bias),
        move(slopes),
    )


def grid_case(
    seed: int, index: int, causal: bool, layout: str, heads: tuple[int, int], dim: int, **fields
) -> Case:
    """Case ``index`` of a parametrized grid: the grid's axes, plus bias mode, key bias and ALiBi rotated
    with the index so that the grid covers their combinations; ``fields`` go to :func:`make_case`."""
    return make_case(
        seed + index,
        layout=layout,
        heads=heads[0],
        kv_heads=heads[1],
        dim=dim,
        causal=causal,
        bias_mode=("none", "float", "tensor")[index % 3],
        key_bias=index % 2 == 0,
        alibi=index % 4 == 1,
        **fields,
    )


def rounded(case: Case, dtype: torch.dtype) -> Case:
    """The case with q / k / v / dout rounded to ``dtype`` (kept in float64), so that a float64 reference
    sees exactly the inputs a low-precision run sees."""
    r = lambda t: t.to(dtype).to(torch.float64)
    return replace(case, q=r(case.q), k=r(case.k), v=r(case.v), dout=r(case.dout))


def run(case: Case, dtype: torch.dtype, fast_sigmoid: bool | None = None):
    """Run the op on ``case`` cast to ``dtype``; returns (out, grads) upcast to float64.

    grads = (dq, dk, dv, dkey_bias or None, dbias or None).
    """
    leaves = [case.q.to(dtype), case.k.to(dtype), case.v.to(dtype)]
    kb = (
        case.key_bias.to(torch.float32 if dtype != torch.float64 else dtype)
        if case.key_bias is not None
        else None
    )
    hb = case.head_bias
    if isinstance(hb, torch.Tensor):
        hb = hb.to(torch.float32 if dtype != torch.float64 else dtype)
    tensors = leaves + [t for t in (kb, hb) if isinstance(t, torch.Tensor)]
    tensors = [t.detach().requires_grad_() for t in tensors]
    q, k, v = tensors[:3]
    rest = iter(tensors[3:])
    kb = next(rest) if kb is not None else None
    hb = next(rest) if isinstance(hb, torch.Tensor) else hb
    slopes = case.alibi.to(torch.float32) if case.alibi is not None else None
    if dtype == torch.float64 and slopes is not None:
        slopes = case.alibi
    kwargs = dict(
        causal=case.causal,
        key_bias=kb,
        bias=hb,
        alibi_slopes=slopes,
        scale=case.scale,
        fast_sigmoid=fast_sigmoid,
    )
    if case.layout == "padded":
        out = sigmoid_attn_func(q, k, v, seq_lens_q=case.lens_q, seq_lens_k=case.lens_k, **kwargs)
    else:
        cu_q, cu_k = cu_seqlens_from_lengths(case.lens_q), cu_seqlens_from_lengths(case.lens_k)
        out = sigmoid_attn_varlen_func(q, k, v, cu_q, cu_k, case.max_q, case.max_k, **kwargs)
    grads = torch.autograd.grad(out, tensors, case.dout.to(dtype), allow_unused=False)
    grads = [
        *grads[:3],
        grads[3] if kb is not None else None,
        grads[-1] if isinstance(hb, torch.Tensor) else None,
    ]
    as64 = lambda t: None if t is None else t.detach().to(torch.float64)
    return as64(out), [as64(g) for g in grads]


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """||a - ref|| / ||ref|| (0 when both are 0)."""
    denom = ref.norm().item()
    diff = (a - ref).norm().item()
    if denom == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / denom


def padded_rows_mask(case: Case) -> torch.Tensor:
    """Bool [B, Lq] of padded query rows (padded layout)."""
    lq = case.q.shape[1]
    return torch.arange(lq, device=case.q.device).view(1, -1) >= case.lens_q.view(-1, 1).to(torch.int64)


GRAD_NAMES = ("dq", "dk", "dv", "dkey_bias", "dbias")


def compare(case: Case, got, ref, bound: float, oracle=None, factor_out=2.0, factor_grad=3.0) -> list[str]:
    """Failures (empty when all pass): every tensor finite and within ``bound`` of the reference; with an
    ``oracle`` (plain PyTorch in the same dtype), also within ``factor`` times the oracle's own error."""
    problems = []
    pairs = [("out", got[0], ref[0], None if oracle is None else oracle[0], factor_out)]
    for i, name in enumerate(GRAD_NAMES):
        pairs.append((name, got[1][i], ref[1][i], None if oracle is None else oracle[1][i], factor_grad))
    for name, a, r, o, factor in pairs:
        if r is None:
            continue
        if not torch.isfinite(a).all():
            problems.append(f"{name}: {int((~torch.isfinite(a)).sum())} non-finite elements (unwritten?)")
            continue
        err = rel_err(a, r)
        if err > bound:
            problems.append(f"{name}: relative error {err:.3e} > {bound:.1e}")
        if o is not None:
            oerr = rel_err(o, r)
            if err > factor * oerr + 1e-6:
                problems.append(f"{name}: error {err:.3e} > {factor}x plain PyTorch's {oerr:.3e}")
    if case.layout == "padded" and padded_rows_mask(case).any():
        pad = padded_rows_mask(case)
        if got[0][pad].abs().max().item() != 0.0:
            problems.append("out: padded query rows are not exactly 0")
    return problems


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_kernels(case: Case, dtype: torch.dtype, kernel_mode, reference_mode, fast_sigmoid=None) -> None:
    """Run the kernels (inside ``kernel_mode()``, outputs poisoned) and the plain-PyTorch path (inside
    ``reference_mode()``) in float64 and in ``dtype`` on the same rounded inputs; assert the bounds."""
    from sigcell.ops.sigmoid_attn import interface

    case = rounded(case, dtype)
    with kernel_mode(), interface.poison_outputs():
        got = run(case, dtype, fast_sigmoid)
    with reference_mode():
        ref = run(case, torch.float64)
        oracle = run(case, dtype) if dtype != torch.float32 else None
    problems = compare(case, got, ref, TOLERANCE[dtype], oracle)
    assert not problems, problems
