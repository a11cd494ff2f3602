"""The Triton kernels on a CUDA GPU at realistic sizes, against float64 (computed on the GPU by the
plain-PyTorch path) and against plain PyTorch run in the same low precision (the flash-attn oracle:
the kernel's error must stay within 2x (output) / 3x (gradients) of it). Skipped without CUDA."""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch

from sigcell.ops.sigmoid_attn import interface
from tests.ops.cases import DTYPES, check_kernels, grid_case, make_case, rel_err, rounded, run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _check(case, dtype, fast_sigmoid=None):
    check_kernels(case, dtype, contextlib.nullcontext, interface.plain_pytorch, fast_sigmoid)


GRID = list(itertools.product(DTYPES, [False, True], ["padded", "varlen"], [(8, 8), (8, 2)], [64, 128]))


@pytest.mark.parametrize(("dtype", "causal", "layout", "heads", "dim"), GRID)
def test_kernels_match_reference(dtype, causal, layout, heads, dim, monkeypatch):
    """The portable Triton kernels (the Hopper forward has its own grid below)."""
    monkeypatch.setenv("SIGCELL_HOPPER_FWD", "0")
    monkeypatch.setenv("SIGCELL_HOPPER_BWD", "0")
    index = GRID.index((dtype, causal, layout, heads, dim))
    case = grid_case(
        5000, index, causal, layout, heads, dim, batch=4, lq=1000 if causal else 1031,
        lk=1031 if causal else 977, device="cuda",
    )
    _check(case, DTYPES[dtype])


def _hopper_calls(monkeypatch) -> dict[str, list]:
    """Route D64, D128 and D256 to the Gluon forward and backward and record their launches (skips off
    sm_90): kernel name -> shapes of q it ran on."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon kernels need an sm_90 GPU (H100 / H200)")
    switches = ("HOPPER_FWD", "HOPPER_BWD", "HOPPER_BWD_KERNELS", "HOPPER_WS_DIMS", "HOPPER_WS_BWD_DIMS",
                "HOPPER_WS_PINGPONG_DIMS")
    for name in (*switches, "FUSED_BWD"):
        monkeypatch.delenv(f"SIGCELL_{name}", raising=False)
    monkeypatch.setenv("SIGCELL_HOPPER_FWD_DIMS", "64,128,256")
    monkeypatch.setenv("SIGCELL_HOPPER_BWD_DIMS", "64,128,256")
    calls = {"forward": [], "dkdv": [], "dq": []}
    for kernel in calls:
        launch = getattr(interface, f"_hopper_{kernel}")

        def spy(*args, _launch=launch, _calls=calls[kernel], **kwargs):
            _calls.append(args[0].shape)
            return _launch(*args, **kwargs)

        monkeypatch.setattr(interface, f"_hopper_{kernel}", spy)
    return calls


def _all_ran(calls: dict[str, list]) -> bool:
    return all(calls.values())


HOPPER_GRID = list(
    itertools.product(
        ["bf16", "fp16"], [False, True], ["padded", "varlen"], [(8, 8), (8, 2)], [64, 128], [False, True]
    )
)


@pytest.mark.parametrize(("dtype", "causal", "layout", "heads", "dim", "key_bias"), HOPPER_GRID)
def test_hopper_forward_matches_reference(dtype, causal, layout, heads, dim, key_bias, monkeypatch):
    calls = _hopper_calls(monkeypatch)
    index = HOPPER_GRID.index((dtype, causal, layout, heads, dim, key_bias))
    case = make_case(
        8000 + index, layout=layout, batch=4, lq=1000 if causal else 1031, lk=1031 if causal else 977,
        heads=heads[0], kv_heads=heads[1], dim=dim, causal=causal, key_bias=key_bias,
        bias_mode=("none", "float", "tensor")[index % 3], device="cuda",
    )
    _check(case, DTYPES[dtype])
    assert _all_ran(calls), f"a Gluon kernel did not run: {calls}"


def _hopper_case(seed: int, index: int, causal: bool, layout: str, dim: int):
    """Case ``index`` of a Gluon-kernel grid: 3 sequences of about 700 tokens, 4 query / 2 KV heads, bias
    mode and key bias rotated with the index (no ALiBi, which the Gluon kernels do not take)."""
    return make_case(
        seed + index, layout=layout, batch=3, lq=700 if causal else 731, lk=731 if causal else 677,
        heads=4, kv_heads=2, dim=dim, causal=causal, key_bias=bool(index % 2),
        bias_mode=("none", "float", "tensor")[index % 3], device="cuda",
    )


HOPPER_D256_GRID = list(itertools.product(["bf16", "fp16"], [False, True], ["padded", "varlen"]))


@pytest.mark.parametrize(("dtype", "causal", "layout"), HOPPER_D256_GRID)
def test_hopper_forward_d256_matches_reference(dtype, causal, layout, monkeypatch):
    """The Gluon kernels at D256 (dK and dV in separate launches of the dK / dV kernel)."""
    calls = _hopper_calls(monkeypatch)
    index = HOPPER_D256_GRID.index((dtype, causal, layout))
    case = _hopper_case(8400, index, causal, layout, 256)
    _check(case, DTYPES[dtype])
    assert _all_ran(calls), f"a Gluon kernel did not run: {calls}"


@pytest.mark.parametrize("layout", ["padded", "varlen"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("key_bias", [False, True])
def test_hopper_forward_edges(layout, causal, key_bias, monkeypatch):
    """Lengths 1 and 0 (on either side), one row past a block, a block and a half, full length."""
    calls = _hopper_calls(monkeypatch)
    case = make_case(
        8100 + 2 * causal + key_bias, layout=layout, lq=300, lk=300, lens_q=[1, 0, 300, 0, 129, 65, 192],
        lens_k=[1, 0, 0, 300, 77, 65, 191], heads=4, kv_heads=1, dim=128, causal=causal, key_bias=key_bias,
        device="cuda",
    )
    _check(case, torch.bfloat16)
    assert _all_ran(calls), f"a Gluon kernel did not run: {calls}"
    # D256: the same edges through the Gluon forward (64-row query blocks).
    case = make_case(
        8150 + 2 * causal + key_bias, layout=layout, lq=200, lk=200, lens_q=[1, 0, 200, 0, 65, 64, 129],
        lens_k=[1, 0, 0, 200, 77, 63, 128], heads=2, kv_heads=1, dim=256, causal=causal, key_bias=key_bias,
        device="cuda",
    )
    _check(case, torch.bfloat16)


WS_GRID = list(itertools.product(["bf16", "fp16"], [False, True], ["padded", "varlen"], [64, 128, 256]))


def _ws_variant(variant: str, dim: int, monkeypatch) -> None:
    """Route the forward to the warp-specialized kernel; ``variant`` names its options: "pingpong",
    "split" (separate K / V rings, a config of interface._HOPPER_WS_SPLIT_CONFIGS) and "persistent"
    (5 programs, so that each walks many tiles)."""
    monkeypatch.setenv("SIGCELL_HOPPER_WS_DIMS", "64,128,256")
    monkeypatch.setenv("SIGCELL_HOPPER_WS_PINGPONG_DIMS", "64,128,256" if "pingpong" in variant else "")
    monkeypatch.setenv("SIGCELL_HOPPER_WS_PERSISTENT_DIMS", "64,128,256" if "persistent" in variant else "")
    if "persistent" in variant:
        monkeypatch.setattr(interface, "_sm_count", lambda device: 5)
    if "split" in variant:
        monkeypatch.setitem(interface._config_override, "hopper_ws", interface._HOPPER_WS_SPLIT_CONFIGS[dim])


WS_VARIANTS = ["one-ring", "pingpong", "split", "split-pingpong", "persistent", "persistent-split-pingpong"]


@pytest.mark.parametrize("variant", WS_VARIANTS)
@pytest.mark.parametrize(("dtype", "causal", "layout", "dim"), WS_GRID)
def test_hopper_ws_forward_matches_reference(dtype, causal, layout, dim, variant, monkeypatch):
    """The warp-specialized forward (hopper_ws.py, SIGCELL_HOPPER_WS_DIMS): one K / V ring or split
    rings, with and without ping-pong (SIGCELL_HOPPER_WS_PINGPONG_DIMS)."""
    calls = _hopper_calls(monkeypatch)
    _ws_variant(variant, dim, monkeypatch)
    index = WS_GRID.index((dtype, causal, layout, dim))
    case = _hopper_case(8700 + 25 * WS_VARIANTS.index(variant), index, causal, layout, dim)
    _check(case, DTYPES[dtype])
    assert calls["forward"], calls


@pytest.mark.parametrize(("dtype", "causal", "layout", "dim"), WS_GRID)
def test_hopper_ws_backward_matches_reference(dtype, causal, layout, dim, monkeypatch):
    """The opt-in warp-specialized dQ and dK / dV kernels (hopper_ws.py, SIGCELL_HOPPER_WS_BWD_DIMS)."""
    calls = _hopper_calls(monkeypatch)
    monkeypatch.setenv("SIGCELL_HOPPER_WS_BWD_DIMS", "64,128,256")
    index = WS_GRID.index((dtype, causal, layout, dim))
    case = _hopper_case(8900, index, causal, layout, dim)
    _check(case, DTYPES[dtype])
    assert calls["dq"] and calls["dkdv"], calls


@pytest.mark.parametrize("dim", [64, 128, 256])
@pytest.mark.parametrize("layout", ["padded", "varlen"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "kernels",
    ["fwd", "fwd-pingpong", "fwd-split", "fwd-split-pingpong", "fwd-persistent", "fwd-persistent-split",
     "fwd,bwd"],
)
def test_hopper_ws_edges(dim, layout, causal, kernels, monkeypatch):
    """Lengths 0 and 1, one row or key past a program, a program and a half: the warp-specialized
    forward (split rings, ping-pong), and with it the warp-specialized backward."""
    _hopper_calls(monkeypatch)
    _ws_variant(kernels, dim, monkeypatch)
    if "bwd" in kernels:
        monkeypatch.setenv("SIGCELL_HOPPER_WS_BWD_DIMS", "64,128,256")
    case = make_case(
        8800 + 2 * dim + causal, layout=layout, lq=300, lk=300, lens_q=[1, 0, 300, 0, 129, 257, 192],
        lens_k=[1, 0, 0, 300, 77, 65, 191], heads=2, kv_heads=1, dim=dim, causal=causal, key_bias=True,
        device="cuda",
    )
    _check(case, torch.bfloat16)


FUSED_HOPPER_GRID = list(itertools.product(["bf16", "fp16"], [False, True], ["padded", "varlen"], [64, 128]))


@pytest.mark.parametrize(("dtype", "causal", "layout", "dim"), FUSED_HOPPER_GRID)
def test_hopper_fused_backward_matches_reference(dtype, causal, layout, dim, monkeypatch):
    """The opt-in one-kernel Gluon backward (SIGCELL_HOPPER_BWD_KERNELS=fused)."""
    calls = _hopper_calls(monkeypatch)
    monkeypatch.setenv("SIGCELL_HOPPER_BWD_KERNELS", "fused")
    index = FUSED_HOPPER_GRID.index((dtype, causal, layout, dim))
    case = make_case(
        8300 + index,
        layout=layout,
        batch=4,
        lq=1000 if causal else 1031,
        lk=1031 if causal else 977,
        heads=8,
        kv_heads=2,
        dim=dim,
        causal=causal,
        key_bias=index % 2 == 1,
        bias_mode=("none", "float", "tensor")[index % 3],
        device="cuda",
    )
    _check(case, DTYPES[dtype])
    assert calls["dkdv"] and not calls["dq"], calls


@pytest.mark.parametrize(
    ("kernels", "dim"),
    [("dkdv,dq", 128), ("fused", 128), ("dkdv,dq", 256), ("ws", 128), ("ws", 256), ("ws-pingpong", 64),
     ("ws-split", 256), ("ws-persistent", 128)],
)
@pytest.mark.parametrize("causal", [False, True])
def test_hopper_kernels_ignore_nan_padding(causal, kernels, dim, monkeypatch):
    """NaN in the padding rows of q / k / v / dout changes nothing, forward or backward (the kernels read
    padding past each sequence through TMA, mask its scores and zero those operand rows)."""
    calls = _hopper_calls(monkeypatch)
    if kernels.startswith("ws"):  # the warp-specialized forward (its variants) and backward
        _ws_variant(kernels, dim, monkeypatch)
        monkeypatch.setenv("SIGCELL_HOPPER_WS_BWD_DIMS", str(dim))
    else:
        monkeypatch.setenv("SIGCELL_HOPPER_BWD_KERNELS", kernels)
    gen = torch.Generator(device="cuda").manual_seed(8200 + causal)
    lens = torch.tensor([333, 200, 1, 64], dtype=torch.int32, device="cuda")
    q, k, v, dout = (
        torch.randn(4, 333, 4, dim, device="cuda", generator=gen).to(torch.bfloat16) for _ in range(4)
    )
    padding = torch.arange(333, device="cuda")[None, :] >= lens[:, None]

    def attend(fill):
        filled = [t.masked_fill(padding[:, :, None, None], fill).requires_grad_() for t in (q, k, v)]
        out = interface.sigmoid_attn_func(*filled, seq_lens_q=lens, seq_lens_k=lens, causal=causal)
        out.backward(dout.masked_fill(padding[:, :, None, None], fill))
        return [out.detach()] + [t.grad for t in filled]

    clean, dirty = attend(0.0), attend(float("nan"))
    for name, a, b in zip(("out", "dq", "dk", "dv"), clean, dirty, strict=True):
        if kernels == "fused" and name == "dq":  # float32 atomics: the order of additions varies
            torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
        else:
            assert torch.equal(a, b), name
        assert (a[padding] == 0).all(), name
    assert [len(c) for c in calls.values()] == ([2, 2, 0] if kernels == "fused" else [2, 2, 2])


FUSED_GRID = list(itertools.product(DTYPES, [False, True], ["padded", "varlen"], [(8, 2)], [64, 128]))


@pytest.mark.parametrize(("dtype", "causal", "layout", "heads", "dim"), FUSED_GRID)
def test_fused_backward_matches_reference(dtype, causal, layout, heads, dim, monkeypatch):
    """The opt-in fused backward (SIGCELL_FUSED_BWD=1: dK, dV and atomic dQ in one kernel)."""
    monkeypatch.setenv("SIGCELL_FUSED_BWD", "1")
    index = FUSED_GRID.index((dtype, causal, layout, heads, dim))
    case = grid_case(
        7000, index, causal, layout, heads, dim, batch=4, lq=1000 if causal else 1031,
        lk=1031 if causal else 977, device="cuda",
    )
    _check(case, DTYPES[dtype])


@pytest.mark.parametrize("dim", [40, 256])
def test_fused_backward_odd_and_large_head_dims(dim, monkeypatch):
    monkeypatch.setenv("SIGCELL_FUSED_BWD", "1")
    case = make_case(7100 + dim, batch=3, lq=517, heads=4, kv_heads=2, dim=dim, bias_mode="tensor",
                     device="cuda")
    _check(case, torch.bfloat16)


@pytest.mark.parametrize("dim", [16, 40, 80, 96, 128, 160, 192, 256])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_head_dims(dim, dtype):
    case = make_case(
        6000 + dim, batch=3, lq=517, heads=4, kv_heads=2, dim=dim, bias_mode="tensor", device="cuda"
    )
    _check(case, DTYPES[dtype])


@pytest.mark.parametrize("layout", ["padded", "varlen"])
@pytest.mark.parametrize("causal", [False, True])
def test_long_cells(layout, causal):
    case = make_case(
        7000 + causal,
        layout=layout,
        lq=16384,
        lk=16384,
        lens_q=[16384, 9000],
        lens_k=[16384, 9000],
        heads=2,
        kv_heads=1,
        dim=128,
        causal=causal,
        device="cuda",
    )
    _check(case, torch.bfloat16)


@pytest.mark.parametrize("layout", ["padded", "varlen"])
def test_edges(layout):
    case = make_case(
        7100,
        layout=layout,
        lq=300,
        lk=300,
        lens_q=[1, 0, 300, 0, 129],
        lens_k=[1, 0, 0, 300, 77],
        heads=4,
        kv_heads=1,
        dim=64,
        causal=True,
        device="cuda",
    )
    _check(case, torch.float16)


@pytest.mark.parametrize("fast_sigmoid", [True, False])
@pytest.mark.parametrize("logit_scale", [1e4, -1e4])
def test_extreme_logits(logit_scale, fast_sigmoid):
    case = rounded(
        make_case(7200, lq=700, dim=64, logit_scale=logit_scale, causal=True, device="cuda"), torch.bfloat16
    )
    with interface.poison_outputs():
        out, grads = run(case, torch.bfloat16, fast_sigmoid)
    with interface.plain_pytorch():
        ref_out, ref_grads = run(case, torch.float64)
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert rel_err(out, ref_out) < 1e-2
    for got, ref in zip(grads, ref_grads, strict=True):
        if ref is not None:
            assert (got - ref).norm().item() <= 1e-2 * ref.norm().item() + 1e-3


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_fast_and_accurate_sigmoid_both_meet_bounds(dtype):
    case = make_case(7300, batch=4, lq=2048, heads=4, kv_heads=4, dim=64, device="cuda")
    for fast in (True, False):
        _check(case, DTYPES[dtype], fast_sigmoid=fast)


def test_backward_is_deterministic():
    case = make_case(7400, batch=2, lq=1500, heads=8, kv_heads=2, dim=64, bias_mode="tensor", device="cuda")
    first = run(case, torch.bfloat16)
    second = run(case, torch.bfloat16)
    for a, b in zip(first[1], second[1], strict=True):
        if a is not None:
            assert torch.equal(a, b)
