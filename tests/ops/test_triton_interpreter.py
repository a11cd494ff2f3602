"""The real Triton kernels, run on the CPU under the Triton interpreter, against the float64 reference.

Outputs are poisoned (NaN) before every launch, so an element the kernels do not write shows up as
non-finite. Skipped when CUDA is present (tests/ops/test_gpu.py covers the kernels there).
"""

from __future__ import annotations

import contextlib
import itertools
import os

import pytest
import torch

from sigcell.ops.sigmoid_attn import interface
from tests.ops.cases import DTYPES, check_kernels, grid_case, make_case, rel_err, rounded, run

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="Triton interpreter tests run only without CUDA"
)


def _triton(case, dtype):
    with interface.triton_on_cpu(), interface.poison_outputs():
        return run(case, dtype)


def _check(case, dtype):
    check_kernels(case, dtype, interface.triton_on_cpu, contextlib.nullcontext)


@pytest.fixture(params=["split", "fused"])
def backward(request, monkeypatch):
    """Both backward paths: the default split kernels and the opt-in fused one (SIGCELL_FUSED_BWD=1)."""
    if request.param == "fused":
        monkeypatch.setenv("SIGCELL_FUSED_BWD", "1")
    else:
        monkeypatch.delenv("SIGCELL_FUSED_BWD", raising=False)
    return request.param


GRID = list(itertools.product(DTYPES, [False, True], ["padded", "varlen"], [(4, 4), (4, 1)], [16, 40]))


@pytest.mark.parametrize(("dtype", "causal", "layout", "heads", "dim"), GRID)
def test_kernels_match_reference(dtype, causal, layout, heads, dim):
    index = GRID.index((dtype, causal, layout, heads, dim))
    lq, lk = (29, 37) if causal else (37, 34)
    case = grid_case(1000, index, causal, layout, heads, dim, lq=lq, lk=lk)
    _check(case, DTYPES[dtype])


@pytest.mark.parametrize("dim", [8, 80, 96, 160, 192, 256])
def test_odd_and_large_head_dims(dim):
    case = make_case(2000 + dim, dim=dim, heads=2, kv_heads=1, lq=21, bias_mode="tensor")
    _check(case, torch.float32)


@pytest.mark.parametrize("layout", ["padded", "varlen"])
@pytest.mark.parametrize("causal", [False, True])
def test_length_one_and_empty_sequences(layout, causal):
    case = make_case(
        3000 + causal, layout=layout, lq=5, lk=5, lens_q=[1, 0, 5, 0], lens_k=[1, 0, 0, 5], causal=causal
    )
    _check(case, torch.float16)


def test_all_padding_batch(backward):
    case = make_case(3100, lq=7, lens_q=[0, 0], lens_k=[0, 0])
    got = _triton(case, torch.float32)
    assert got[0].abs().max().item() == 0.0
    for grad in got[1]:
        if grad is not None:
            assert torch.isfinite(grad).all() and grad.abs().max().item() == 0.0


@pytest.mark.parametrize("logit_scale", [1e4, -1e4])
def test_extreme_logits_stay_finite(logit_scale, backward):
    """Scores of about +-1e4: no NaN / Inf; outputs and dV match. dS = dP * p * (1 - p) is 0 in float32
    wherever |s| > ~17 while float64 keeps terms down to e^-36, so the logit gradients are compared
    in absolute terms."""
    case = rounded(make_case(3200, lq=19, logit_scale=logit_scale, key_bias=True, causal=True), torch.float32)
    out, grads = _triton(case, torch.float32)
    ref_out, ref_grads = run(case, torch.float64)
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert rel_err(out, ref_out) < 1e-4
    assert rel_err(grads[2], ref_grads[2]) < 1e-4  # dv
    for got, ref in zip(grads, ref_grads, strict=True):
        if ref is not None:
            assert (got - ref).norm().item() <= 1e-3 * ref.norm().item() + 1e-4


def test_non_contiguous_inputs(backward):
    case = make_case(3300, dim=32, lq=23)
    # A view with every stride non-standard: heads and sequence swapped in memory, every other element.
    case.q = case.q.transpose(1, 2).contiguous().transpose(1, 2)
    case.k = torch.cat([case.k, case.k], dim=-1)[..., ::2]
    case.v = case.v.transpose(0, 1).contiguous().transpose(0, 1)
    assert not case.q.is_contiguous() and not case.k.is_contiguous()
    _check(case, torch.float32)


def test_backward_is_deterministic():
    case = make_case(3400, lq=33, heads=4, kv_heads=1, bias_mode="tensor", causal=True)
    first = _triton(case, torch.float32)
    second = _triton(case, torch.float32)
    for a, b in zip(first[1], second[1], strict=True):
        if a is not None:
            assert torch.equal(a, b)


@pytest.mark.parametrize("layout", ["padded", "varlen"])
def test_head_major_grid_when_sequence_heads_exceed_grid_axis(layout, monkeypatch):
    """More (sequence, head) pairs than CUDA's grid axis 1 allows: the kernels switch to the head-major grid
    (BLOCK_FAST off) and must give the same result."""
    monkeypatch.setattr(interface, "_MAX_GRID_Y", 3)
    case = make_case(3500, layout=layout, heads=4, kv_heads=2, lq=21, causal=True, key_bias=True)
    _check(case, torch.float32)


def test_grid_order_is_chosen_by_size_and_env(monkeypatch):
    assert interface._grid(5, 7) == ((5, 7), True)
    assert interface._grid(5, interface._MAX_GRID_Y + 1) == ((interface._MAX_GRID_Y + 1, 5), False)
    monkeypatch.setenv("SIGCELL_BLOCK_FAST_GRID", "0")
    assert interface._grid(5, 7) == ((7, 5), False)


@pytest.mark.parametrize(("layout", "causal", "dim"), [("padded", False, 40), ("varlen", True, 16),
                                                       ("padded", True, 16), ("varlen", False, 40)])
def test_forward_with_tma_descriptors(layout, causal, dim, monkeypatch):
    """K / V through tensor descriptors (the default; SIGCELL_FWD_TMA=0 turns them off): rows past a
    sequence (padding, or the next packed sequence) must not leak in; columns past D read as zero."""
    monkeypatch.setenv("SIGCELL_FWD_TMA", "1")
    built = []
    real = interface._kv_descriptor
    monkeypatch.setattr(interface, "_kv_descriptor", lambda t, cfg: built.append(t.shape) or real(t, cfg))
    case = make_case(3600 + dim + causal, layout=layout, heads=4, kv_heads=2, dim=dim, lq=29, lk=37,
                     causal=causal, key_bias=True, lens_q=[29, 3, 17], lens_k=[37, 1, 20])
    _check(case, torch.bfloat16)
    assert built, "the forward did not take the descriptor path"


def test_tma_needs_aligned_strides():
    x = torch.zeros(2, 8, 3, 16, dtype=torch.float16)
    assert interface._tma_ok(x)
    assert not interface._tma_ok(torch.zeros(2, 8, 3, 7, dtype=torch.float16))  # row stride 14 bytes
    assert not interface._tma_ok(x[..., ::2])


# ----------------------------------------------------------------------------------------------------
# Opt-in fused backward (SIGCELL_FUSED_BWD=1): dK / dV per key block plus dQ through float32 atomics.
# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def fused_bwd(monkeypatch):
    monkeypatch.setenv("SIGCELL_FUSED_BWD", "1")


FUSED_HEADS = [(4, 4), (4, 2), (4, 1)]  # MHA, GQA, MQA
FUSED_GRID = list(
    itertools.product(["fp32", "bf16"], [False, True], ["padded", "varlen"], FUSED_HEADS, [16, 40])
)


@pytest.mark.parametrize(("dtype", "causal", "layout", "heads", "dim"), FUSED_GRID)
def test_fused_backward_matches_reference(dtype, causal, layout, heads, dim, fused_bwd):
    index = FUSED_GRID.index((dtype, causal, layout, heads, dim))
    # Lq > Lk (causal: leading queries see no key) and Lq < Lk, several partial blocks.
    lq, lk = (37, 29) if index // 3 % 2 else (29, 37)
    case = grid_case(4000, index, causal, layout, heads, dim, lq=lq, lk=lk)
    _check(case, DTYPES[dtype])


@pytest.mark.parametrize("dim", [8, 80])
def test_fused_odd_head_dims(dim, fused_bwd):
    case = make_case(4100 + dim, dim=dim, heads=2, kv_heads=1, lq=21, bias_mode="tensor", causal=True)
    _check(case, torch.float32)


@pytest.mark.parametrize("layout", ["padded", "varlen"])
@pytest.mark.parametrize("causal", [False, True])
def test_fused_length_one_and_empty_sequences(layout, causal, fused_bwd):
    case = make_case(
        4200 + causal,
        layout=layout,
        lq=5,
        lk=5,
        lens_q=[1, 0, 5, 0],
        lens_k=[1, 0, 0, 5],
        causal=causal,
        bias_mode="tensor",
    )
    _check(case, torch.float32)
    _check(case, torch.bfloat16)


def test_fused_padded_query_rows_get_exactly_zero_dq(fused_bwd):
    case = make_case(4300, lq=21, lk=18, lens_q=[21, 4, 13], lens_k=[18, 18, 2], heads=4, kv_heads=1)
    _, grads = _triton(case, torch.bfloat16)
    pad = torch.arange(21).view(1, -1) >= case.lens_q.view(-1, 1)
    assert torch.isfinite(grads[0]).all()
    assert grads[0][pad].abs().max().item() == 0.0
    assert grads[0][~pad].abs().max().item() > 0.0


@pytest.mark.parametrize("layout", ["padded", "varlen"])
def test_fused_head_major_grid(layout, monkeypatch, fused_bwd):
    """BLOCK_FAST off (more (sequence, KV head) pairs than grid axis 1 allows)."""
    monkeypatch.setattr(interface, "_MAX_GRID_Y", 3)
    case = make_case(4400, layout=layout, heads=4, kv_heads=2, lq=21, causal=True, key_bias=True, alibi=True)
    _check(case, torch.float32)


@pytest.mark.parametrize("fused", [False, True])
def test_backward_kernels_taken(fused, monkeypatch):
    """SIGCELL_FUSED_BWD=1 launches the dK / dV kernel alone, with FUSED (it also adds dQ); without it, the
    split dK / dV kernel (FUSED off) and the dQ kernel."""
    from sigcell.ops.sigmoid_attn import kernels

    if fused:
        monkeypatch.setenv("SIGCELL_FUSED_BWD", "1")
    else:
        monkeypatch.delenv("SIGCELL_FUSED_BWD", raising=False)
    launched = []

    class Counted:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launched.append((self.name, kwargs.get("FUSED")))
                return self.kernel[grid](*args, **kwargs)

            return launch

    names = ("sigmoid_attn_bwd_dkdv_kernel", "sigmoid_attn_bwd_dq_kernel")
    for name in names:
        monkeypatch.setattr(kernels, name, Counted(name, getattr(kernels, name)))
    case = make_case(4500, lq=9, heads=2, kv_heads=1, key_bias=True, bias_mode="tensor")
    _check(case, torch.float32)
    # _check runs the kernels once (the reference runs plain PyTorch).
    if fused:
        assert launched == [("sigmoid_attn_bwd_dkdv_kernel", True)]
    else:
        assert launched == [("sigmoid_attn_bwd_dkdv_kernel", False), ("sigmoid_attn_bwd_dq_kernel", None)]
