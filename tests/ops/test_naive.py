"""The plain-PyTorch path (the CPU path and the kernels' float64 reference)."""

from __future__ import annotations

import itertools

import pytest
import torch

from sigcell import sigmoid_attn_func, sigmoid_attn_varlen_func
from sigcell.ops import cu_seqlens_from_lengths, pack_padded
from sigcell.ops.sigmoid_attn import interface, naive
from tests.ops.cases import TOLERANCE, make_case, rel_err, rounded, run
from tests.ops.dense_oracle import dense_sigmoid_attention


def _oracle(case):
    """Output and gradients of the dense oracle, sequence by sequence (float64)."""
    leaves = [
        case.q.clone().requires_grad_(),
        case.k.clone().requires_grad_(),
        case.v.clone().requires_grad_(),
    ]
    kb = case.key_bias.clone().requires_grad_() if case.key_bias is not None else None
    hb = (
        case.head_bias.clone().requires_grad_()
        if isinstance(case.head_bias, torch.Tensor)
        else case.head_bias
    )
    q, k, v = leaves
    cu_q, cu_k = cu_seqlens_from_lengths(case.lens_q).tolist(), cu_seqlens_from_lengths(case.lens_k).tolist()
    outs = []
    for b in range(case.lens_q.numel()):
        lq, lk = int(case.lens_q[b]), int(case.lens_k[b])
        if case.layout == "padded":
            qb, kb_, vb = q[b, :lq], k[b, :lk], v[b, :lk]
            keyb = kb[b, :lk] if kb is not None else None
        else:
            qb, kb_, vb = q[cu_q[b] : cu_q[b + 1]], k[cu_k[b] : cu_k[b + 1]], v[cu_k[b] : cu_k[b + 1]]
            keyb = kb[cu_k[b] : cu_k[b + 1]] if kb is not None else None
        outs.append(
            dense_sigmoid_attention(
                qb, kb_, vb, scale=case.scale, bias=hb, causal=case.causal, key_bias=keyb, alibi=case.alibi
            )
        )
    if case.layout == "padded":
        out = torch.zeros_like(case.q)
        for b, o in enumerate(outs):
            out[b, : o.shape[0]] = o
    else:
        out = torch.cat(outs)
    tensors = leaves + [t for t in (kb, hb) if isinstance(t, torch.Tensor)]
    grads = torch.autograd.grad(out, tensors, case.dout, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, tensors, strict=True)]
    named = [
        *grads[:3],
        grads[3] if kb is not None else None,
        grads[-1] if isinstance(hb, torch.Tensor) else None,
    ]
    return out.detach(), named


GRID = list(
    itertools.product(
        [False, True], ["padded", "varlen"], [(4, 4), (4, 2), (3, 1)], ["none", "float", "tensor"]
    )
)


@pytest.mark.parametrize(("causal", "layout", "heads", "bias_mode"), GRID)
def test_matches_dense_oracle(causal, layout, heads, bias_mode):
    index = GRID.index((causal, layout, heads, bias_mode))
    case = make_case(
        100 + index,
        layout=layout,
        lq=11,
        lk=13 if index % 2 else 11,
        heads=heads[0],
        kv_heads=heads[1],
        dim=[8, 5, 16][index % 3],
        causal=causal,
        bias_mode=bias_mode,
        key_bias=index % 2 == 0,
        alibi=index % 3 == 1,
    )
    out, grads = run(case, torch.float64)
    ref_out, ref_grads = _oracle(case)
    assert rel_err(out, ref_out) < 1e-12
    for got, ref in zip(grads, ref_grads, strict=True):
        if ref is not None:
            assert rel_err(got, ref) < 1e-12


@pytest.mark.parametrize("layout", ["padded", "varlen"])
def test_gradcheck(layout):
    case = make_case(
        7,
        layout=layout,
        batch=3,
        lq=5,
        lk=6,
        heads=2,
        kv_heads=1,
        dim=3,
        causal=True,
        bias_mode="tensor",
        alibi=True,
    )
    kb = case.key_bias.clone().requires_grad_()
    hb = case.head_bias.clone().requires_grad_()
    if layout == "padded":
        fn = lambda q, k, v, kb, hb: sigmoid_attn_func(
            q,
            k,
            v,
            seq_lens_q=case.lens_q,
            seq_lens_k=case.lens_k,
            key_bias=kb,
            bias=hb,
            causal=True,
            alibi_slopes=case.alibi,
        )
    else:
        cu_q, cu_k = cu_seqlens_from_lengths(case.lens_q), cu_seqlens_from_lengths(case.lens_k)
        fn = lambda q, k, v, kb, hb: sigmoid_attn_varlen_func(
            q,
            k,
            v,
            cu_q,
            cu_k,
            case.max_q,
            case.max_k,
            key_bias=kb,
            bias=hb,
            causal=True,
            alibi_slopes=case.alibi,
        )
    inputs = (*(t.clone().requires_grad_() for t in (case.q, case.k, case.v)), kb, hb)
    assert torch.autograd.gradcheck(fn, inputs)


def test_long_sequences_are_computed_block_by_block(monkeypatch):
    """Force tiny blocks: many query and key blocks must give the single-block answer."""
    case = make_case(11, lq=200, lk=230, heads=2, kv_heads=1, dim=8, causal=True, key_bias=True, alibi=True)
    whole = run(case, torch.float64)
    monkeypatch.setattr(naive, "_MAX_BLOCK_ELEMENTS", 6 * 2 * 37)
    monkeypatch.setattr(naive, "_block_size", lambda b, h, lq, lk: (min(lq, 37), min(lk, 29)))
    blocked = run(case, torch.float64)
    assert rel_err(blocked[0], whole[0]) < 1e-13
    for a, b in zip(blocked[1], whole[1], strict=True):
        if a is not None:
            assert rel_err(a, b) < 1e-13


def test_padding_never_changes_a_result():
    """A sequence padded to any width, with garbage (even NaN) in the padding, gives the same rows."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 9, 2, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    alone = sigmoid_attn_func(q, k, v)
    wide = lambda t: torch.cat([t, torch.full((1, 7, 2, 8), float("nan"), dtype=torch.float64)], dim=1)
    lens = torch.tensor([9], dtype=torch.int32)
    padded = sigmoid_attn_func(wide(q), wide(k), wide(v), seq_lens_q=lens, seq_lens_k=lens)
    assert rel_err(padded[:, :9], alone) < 1e-14
    assert torch.equal(padded[:, 9:], torch.zeros_like(padded[:, 9:]))


def test_packed_equals_padded():
    case = make_case(12, lq=17, heads=4, kv_heads=2, dim=8, key_bias=True, bias_mode="tensor")
    padded_out, padded_grads = run(case, torch.float64)
    cu_q, cu_k = cu_seqlens_from_lengths(case.lens_q), cu_seqlens_from_lengths(case.lens_k)
    packed = replace_layout(case, cu_q, cu_k)
    packed_out, packed_grads = run(packed, torch.float64)
    assert rel_err(packed_out, pack_padded(padded_out, cu_q)) < 1e-13
    for got, ref, cu in zip(packed_grads[:3], padded_grads[:3], (cu_q, cu_k, cu_k), strict=True):
        assert rel_err(got, pack_padded(ref, cu)) < 1e-13
    assert rel_err(packed_grads[3], pack_padded(padded_grads[3], cu_k)) < 1e-13
    assert rel_err(packed_grads[4], padded_grads[4]) < 1e-13


def replace_layout(case, cu_q, cu_k):
    from dataclasses import replace

    return replace(
        case,
        layout="varlen",
        q=pack_padded(case.q, cu_q),
        k=pack_padded(case.k, cu_k),
        v=pack_padded(case.v, cu_k),
        dout=pack_padded(case.dout, cu_q),
        key_bias=pack_padded(case.key_bias, cu_k),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_within_bounds(dtype):
    case = rounded(
        make_case(13, lq=64, heads=4, kv_heads=2, dim=32, key_bias=True, bias_mode="tensor"), dtype
    )
    got_out, got_grads = run(case, dtype)
    ref_out, ref_grads = run(case, torch.float64)
    assert rel_err(got_out, ref_out) < TOLERANCE[dtype]
    for got, ref in zip(got_grads, ref_grads, strict=True):
        if ref is not None:
            assert rel_err(got, ref) < TOLERANCE[dtype]


def test_extreme_logits_are_finite():
    case = make_case(14, lq=20, logit_scale=1e4, key_bias=True, causal=True)
    out, grads = run(case, torch.float32)
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


def test_empty_inputs():
    q = torch.randn(2, 0, 2, 8)
    assert sigmoid_attn_func(q, q[:, :, :1], q[:, :, :1]).shape == (2, 0, 2, 8)
    cu = torch.zeros(3, dtype=torch.int32)
    qp = torch.randn(0, 2, 8, requires_grad=True)
    out = sigmoid_attn_varlen_func(qp, qp[:, :1], qp[:, :1], cu, cu, 0, 0)
    assert out.shape == (0, 2, 8)
    out.sum().backward()
    assert qp.grad.shape == qp.shape


def test_float64_on_any_device_runs_the_plain_path():
    q = torch.randn(1, 4, 1, 16, dtype=torch.float64)
    assert not interface._uses_triton(q)
