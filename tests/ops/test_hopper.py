"""The Gluon kernels for Hopper (ops/sigmoid_attn/hopper.py, hopper_bwd.py) without a GPU: they compile
for sm_90a (ptxas included) with the asynchronous-wgmma schedules they exist for, and the dispatch sends
them only what they support. Their numbers are checked on an H100 / H200 in test_gpu.py."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton.experimental.gluon")

from sigcell.ops.sigmoid_attn import interface


@pytest.mark.parametrize(
    ("dim", "dtype", "causal", "key_bias", "padded"),
    [
        (128, "bf16", False, False, True),
        (128, "fp16", True, True, False),
        (64, "bf16", True, False, False),
        (256, "bf16", True, True, True),
    ],
)
def test_compiles_for_sm90_with_overlapped_wgmma(dim, dtype, causal, key_bias, padded):
    from sigcell.ops.sigmoid_attn.hopper import compile_sm90

    kernel = compile_sm90(dim, dtype=dtype, causal=causal, key_bias=key_bias, padded=padded, group=2)
    ptx = kernel.asm["ptx"]
    # Q K^T is waited for with P V still in flight (one wgmma group outstanding) in both key loops.
    assert ptx.count("wgmma.wait_group.sync.aligned 1;") == 2
    assert "tanh.approx.f32" in ptx
    assert "cp.async.bulk.tensor.2d" in ptx  # TMA loads
    assert kernel.metadata.shared <= 227 * 1024  # fits an H100 / H200 SM


@pytest.mark.parametrize(
    ("kind", "dim", "dtype", "causal", "key_bias", "padded", "waits"),
    [
        # dK / dV: per query block, S^T is waited for with dP^T in flight, dP^T with dV in flight.
        ("dkdv", 128, "bf16", False, False, True, {1: 4, 0: 2}),  # whole and tail loops
        ("dkdv", 64, "fp16", True, True, False, {1: 6, 0: 3}),  # diagonal, whole and tail loops
        # dQ (pipelined): S_j is waited for with dP_j and the previous block's dQ in flight.
        ("dq", 128, "bf16", True, True, False, {2: 2, 1: 3, 0: 4}),
        ("dq", 64, "fp16", False, False, True, {2: 2, 1: 3, 0: 4}),
        # fused (opt-in): the dK/dV schedule plus dQ = dS K from shared memory, retired with dK and dV.
        ("fused", 64, "bf16", True, True, False, {1: 6, 0: 3}),
        # D256 parts: dK alone waits for S^T with dP^T in flight, then for dP^T and dK; dV alone has no
        # second matmul to overlap (S^T, then dV).
        ("dk", 256, "bf16", True, True, False, {1: 3, 0: 6}),
        ("dv", 256, "fp16", True, False, True, {1: 0, 0: 6}),
        ("dq", 256, "bf16", False, True, True, {2: 2, 1: 3, 0: 4}),
    ],
)
def test_backward_compiles_for_sm90_with_overlapped_wgmma(kind, dim, dtype, causal, key_bias, padded, waits):
    from sigcell.ops.sigmoid_attn.hopper_bwd import compile_bwd_sm90

    flags = {"causal": causal, "key_bias": key_bias, "padded": padded}
    kernel = compile_bwd_sm90(kind, dim, dtype=dtype, group=2, **flags)
    ptx = kernel.asm["ptx"]
    for outstanding, count in waits.items():
        assert ptx.count(f"wgmma.wait_group.sync.aligned {outstanding};") == count
    assert "tanh.approx.f32" in ptx
    assert "cp.async.bulk.tensor.2d" in ptx
    assert kernel.metadata.shared <= 227 * 1024


@pytest.mark.parametrize(
    ("dim", "causal", "key_bias"), [(64, True, False), (128, False, True), (256, True, True)]
)
@pytest.mark.parametrize("kind", ["fwd", "fwd_pingpong", "fwd_split", "fwd_persistent", "dq", "dkdv"])
def test_ws_kernels_compile_for_sm90(dim, causal, key_bias, kind):
    """The warp-specialized forward and dQ kernels: register reallocation between partitions, each
    consumer's loops keep a matmul in flight while it computes (forward: P V during the sigmoid; dQ: dP
    and dQ during the tanh, then dQ during dS), shared memory within an SM, and no CTA-wide barrier
    (which would deadlock partitions that run different code)."""
    import re

    from sigcell.ops.sigmoid_attn.hopper_ws import compile_ws_sm90
    from sigcell.ops.sigmoid_attn.hopper_ws_bwd import compile_ws_bwd_sm90

    configs = {
        "fwd": interface._HOPPER_WS_CONFIGS,
        "fwd_pingpong": interface._HOPPER_WS_CONFIGS,
        "fwd_split": interface._HOPPER_WS_SPLIT_CONFIGS,
        "fwd_persistent": interface._HOPPER_WS_SPLIT_CONFIGS,
        "dq": interface._HOPPER_WS_DQ_CONFIGS,
        "dkdv": interface._HOPPER_WS_DKDV_CONFIGS,
    }[kind]
    if kind == "dkdv" and dim == 256:
        kind = "dk"  # D256: dK and dV in separate launches
    flags = {"causal": causal, "key_bias": key_bias, "padded": not causal}
    if kind.startswith("fwd"):  # the persistent kernel: with split rings and ping-pong
        options = {
            "pingpong": kind in ("fwd_pingpong", "fwd_persistent"),
            "persistent": kind == "fwd_persistent",
        }
        kernel = compile_ws_sm90(dim, configs[dim], group=2, **options, **flags)
    else:
        kernel = compile_ws_bwd_sm90(kind, dim, configs[dim], group=2, **flags)
    ptx = kernel.asm["ptx"]
    assert re.search(r"setmaxnreg\.inc\.sync\.aligned\.u32\s+240;", ptx)
    waits = {n: ptx.count(f"wgmma.wait_group.sync.aligned {n};") for n in range(3)}
    # Per consumer (two): forward, two key loops; dQ, plus the first block's wait for S with dP in
    # flight; dK / dV, three query loops (two without a causal diagonal) waiting for S^T (dP^T in
    # flight) and dP^T (dV in flight), then for dK / dV; dK alone waits for dP^T with nothing in flight.
    loops = 3 if causal else 2
    expected = {
        "fwd": {1: 4},
        "fwd_pingpong": {1: 4},
        "fwd_split": {1: 4},
        "fwd_persistent": {1: 4},
        "dq": {2: 4, 1: 6},
        "dkdv": {1: 4 * loops, 0: 2 * loops},
        "dk": {1: 2 * loops, 0: 4 * loops},
    }[kind]
    assert {n: waits[n] for n in expected} == expected
    if kind.startswith("fwd"):  # ping-pong: the turn passes between issuing the matmuls and waiting for S
        chunks = ptx.split("wgmma.wait_group.sync.aligned 1;")[:-1]
        between = [chunk.rsplit("wgmma.commit_group", 1)[1] for chunk in chunks]
        assert all(
            ("mbarrier.arrive" in text) == ("pingpong" in kind or "persistent" in kind) for text in between
        )
    assert not re.search(r"\bbar\.sync\s+0;", ptx)  # partition barriers name their thread count
    assert kernel.metadata.shared <= 227 * 1024


def test_hopper_backward_switches(monkeypatch):
    q = torch.zeros(1, 64, 2, 128, dtype=torch.bfloat16)
    monkeypatch.delenv("SIGCELL_HOPPER_BWD", raising=False)
    assert interface._hopper_bwd_kernels(q, q, q, q, None, False, True, 2) == set()  # CPU tensors
    monkeypatch.setattr(interface, "_hopper_eligible", lambda *args: True)
    assert interface._hopper_bwd_kernels(q, q, q, q, None, False, True, 2) == {"dkdv", "dq"}
    monkeypatch.setenv("SIGCELL_HOPPER_BWD_KERNELS", "dq, bogus")
    assert interface._hopper_bwd_kernels(q, q, q, q, None, False, True, 2) == {"dq"}
    monkeypatch.setenv("SIGCELL_HOPPER_BWD_KERNELS", "fused")
    assert interface._hopper_bwd_kernels(q, q, q, q, None, False, True, 2) == {"fused"}
    q256 = torch.zeros(1, 64, 2, 256, dtype=torch.bfloat16)
    assert interface._hopper_bwd_kernels(q256, q256, q256, q256, None, False, True, 2) == set()  # no fused
    monkeypatch.delenv("SIGCELL_HOPPER_BWD_KERNELS")
    assert interface._hopper_bwd_kernels(q256, q256, q256, q256, None, False, True, 2) == {"dkdv", "dq"}
    monkeypatch.setenv("SIGCELL_HOPPER_BWD_DIMS", "64")
    assert interface._hopper_bwd_kernels(q, q, q, q, None, False, True, 2) == set()
    monkeypatch.delenv("SIGCELL_HOPPER_BWD_DIMS")
    monkeypatch.setenv("SIGCELL_HOPPER_BWD_KERNELS", "fused")
    monkeypatch.setenv("SIGCELL_HOPPER_BWD", "0")
    assert interface._hopper_bwd_kernels(q, q, q, q, None, False, True, 2) == set()
    monkeypatch.delenv("SIGCELL_HOPPER_BWD")
    odd = torch.zeros(1, 64, 2, 96, dtype=torch.bfloat16)  # no configuration for D = 96
    assert interface._hopper_bwd_kernels(odd, odd, odd, odd, None, False, True, 2) == set()


def test_flat_rows_accepts_contiguous_and_fused_qkv_views():
    contiguous = torch.zeros(2, 48, 4, 64, dtype=torch.bfloat16)
    fused_qkv = torch.zeros(2, 48, 3, 4, 64, dtype=torch.bfloat16)[:, :, 1]
    assert interface._flat_rows_ok(contiguous, varlen=False)
    assert interface._flat_rows_ok(fused_qkv, varlen=False)


def test_flat_rows_rejects_layouts_tma_cannot_read_as_rows():
    heads_major = torch.zeros(2, 4, 48, 64, dtype=torch.bfloat16).transpose(1, 2)  # heads not packed
    gapped = torch.zeros(2, 50, 4, 64, dtype=torch.bfloat16)[:, :48]  # sequences not back to back
    odd_row = torch.zeros(2, 48, 4 * 64 + 4, dtype=torch.bfloat16)[..., :256].view(2, 48, 4, 64)
    assert not interface._flat_rows_ok(heads_major, varlen=False)
    assert not interface._flat_rows_ok(gapped, varlen=False)
    assert interface._flat_rows_ok(gapped[:1], varlen=False)  # a single sequence has no batch stride
    assert not interface._flat_rows_ok(odd_row, varlen=False)  # 520-byte rows: not 16-byte aligned


def test_hopper_dims_switches(monkeypatch):
    monkeypatch.delenv("SIGCELL_HOPPER_FWD", raising=False)
    monkeypatch.delenv("SIGCELL_HOPPER_FWD_DIMS", raising=False)
    assert interface._hopper_dims() == {128, 256}
    monkeypatch.setenv("SIGCELL_HOPPER_FWD_DIMS", "64,128,96")
    assert interface._hopper_dims() == {64, 128}  # 96 has no configuration
    monkeypatch.setenv("SIGCELL_HOPPER_FWD", "0")
    assert interface._hopper_dims() == set()


def test_warp_specialized_forward_rule(monkeypatch):
    """Default: D256 always, D128 from 2048 query rows, D64 never; SIGCELL_HOPPER_WS_DIMS overrides
    (empty: never)."""
    monkeypatch.delenv("SIGCELL_HOPPER_WS_DIMS", raising=False)
    assert [interface._uses_ws_forward(d, 1024) for d in (64, 128, 256)] == [False, False, True]
    assert [interface._uses_ws_forward(d, 2048) for d in (64, 128, 256)] == [False, True, True]
    monkeypatch.setenv("SIGCELL_HOPPER_WS_DIMS", "64")
    assert [interface._uses_ws_forward(d, 16) for d in (64, 128, 256)] == [True, False, False]
    assert interface._hopper_dims() == {64, 128, 256}  # a forced head dim takes the Gluon forward
    monkeypatch.setenv("SIGCELL_HOPPER_WS_DIMS", "")
    assert not any(interface._uses_ws_forward(d, 16384) for d in (64, 128, 256))


def test_cpu_tensors_never_take_the_hopper_path():
    q = torch.zeros(1, 64, 2, 128, dtype=torch.bfloat16)
    assert not interface._uses_hopper_forward(q, q, q, None, False, True, 2)


@pytest.mark.parametrize("varlen", [False, True])
def test_launchers_pass_every_kernel_argument(varlen, monkeypatch):
    """The interface's Gluon launchers bind to their kernels' signatures (no GPU: the kernels are
    replaced by a binder that records each launch's grid)."""
    import inspect

    from sigcell.ops.sigmoid_attn import hopper, hopper_bwd, hopper_ws, hopper_ws_bwd

    launches, pingpong = [], []

    class Binder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, maxnreg=None, **kwargs):  # maxnreg: a launch option, not an argument
                inspect.signature(self.kernel.fn).bind(*args, **kwargs)  # missing / unknown argument
                parts = (kwargs.get("WITH_DK"), kwargs.get("WITH_DV"))
                launches.append((self.kernel.fn.__name__, grid, parts))
                pingpong.append((kwargs.get("PINGPONG"), kwargs.get("V_STAGES")))

            return launch

    for module, name in [
        (hopper, "sigmoid_attn_fwd_hopper_kernel"),
        (hopper_ws, "sigmoid_attn_fwd_hopper_ws_kernel"),
        (hopper_ws, "sigmoid_attn_fwd_hopper_ws_persistent_kernel"),
        (hopper_ws_bwd, "sigmoid_attn_bwd_dq_hopper_ws_kernel"),
        (hopper_ws_bwd, "sigmoid_attn_bwd_dkdv_hopper_ws_kernel"),
        (hopper_bwd, "sigmoid_attn_bwd_dkdv_hopper_kernel"),
        (hopper_bwd, "sigmoid_attn_bwd_dq_hopper_kernel"),
    ]:
        monkeypatch.setattr(module, name, Binder(getattr(module, name)))
    batch, rows, heads, kv_heads, dim = 2, 100, 4, 2, 128
    q = torch.zeros(batch, rows, heads, dim, dtype=torch.bfloat16)
    k = torch.zeros(batch, rows, kv_heads, dim, dtype=torch.bfloat16)
    bias, key_bias = torch.zeros(batch, heads), torch.zeros(batch, rows)
    lengths = tuple(torch.full((batch,), rows, dtype=torch.int32) for _ in range(4))
    dk, dv, dkb = torch.empty_like(k), torch.empty_like(k), torch.zeros(kv_heads, batch, rows)
    common = (bias, key_bias, *lengths, 0.1, True, varlen, rows, torch.empty_like(q))
    interface._hopper_forward(q, k, k, *common)
    interface._hopper_dkdv(q, k, k, q, dk, dv, dkb, bias, key_bias, lengths, 0.1, True, varlen, rows)
    fused = interface._hopper_dkdv(
        q, k, k, q, dk, dv, dkb, bias, key_bias, lengths, 0.1, True, varlen, rows, dq=torch.empty_like(q)
    )
    dbias = interface._hopper_dq(
        q, k, k, q, torch.empty_like(q), bias, key_bias, lengths, 0.1, True, varlen, rows
    )
    monkeypatch.setenv("SIGCELL_HOPPER_WS_DIMS", "128")
    interface._hopper_forward(q, k, k, *common)
    monkeypatch.delenv("SIGCELL_HOPPER_WS_DIMS")
    monkeypatch.setenv("SIGCELL_HOPPER_WS_BWD_DIMS", "128")
    ws_dbias = interface._hopper_dq(
        q, k, k, q, torch.empty_like(q), bias, key_bias, lengths, 0.1, True, varlen, rows
    )
    interface._hopper_dkdv(q, k, k, q, dk, dv, dkb, bias, key_bias, lengths, 0.1, True, varlen, rows)
    monkeypatch.delenv("SIGCELL_HOPPER_WS_BWD_DIMS")
    # D256: dV and dK in one launch each.
    wide = [torch.zeros(*t.shape[:-1], 256, dtype=torch.bfloat16) for t in (q, k)]
    interface._hopper_dkdv(
        wide[0], wide[1], wide[1], wide[0], torch.empty_like(wide[1]), torch.empty_like(wide[1]), dkb, bias,
        key_bias, lengths, 0.1, True, varlen, rows,
    )  # fmt: skip
    monkeypatch.setenv("SIGCELL_HOPPER_WS_DIMS", "128")
    monkeypatch.setenv("SIGCELL_HOPPER_WS_PINGPONG_DIMS", "64,128")
    interface._hopper_forward(q, k, k, *common)
    monkeypatch.setitem(interface._config_override, "hopper_ws", interface._HOPPER_WS_SPLIT_CONFIGS[128])
    interface._hopper_forward(q, k, k, *common)
    assert [launches.pop()[0] for _ in range(2)] == ["sigmoid_attn_fwd_hopper_ws_kernel"] * 2
    # ping-pong: opt-in, per head dim; split K / V rings: a config's fourth entry (0: one ring)
    assert [pingpong[i] for i in (0, 4, -2, -1)] == [(None, None), (False, 0), (True, 0), (True, 2)]
    # Persistent: at most one program per SM, over pairs of tiles (1 tile of 2 x 64 rows per sequence
    # x head here: batch x heads pairs).
    monkeypatch.setenv("SIGCELL_HOPPER_WS_PERSISTENT_DIMS", "128")
    for sms in (132, 3):
        monkeypatch.setattr(interface, "_sm_count", lambda device, sms=sms: sms)
        interface._hopper_forward(q, k, k, *common)
        name, grid, _ = launches.pop()
        assert name == "sigmoid_attn_fwd_hopper_ws_persistent_kernel" and grid == (min(sms, batch * heads),)
    assert [name for name, _, _ in launches] == [
        "sigmoid_attn_fwd_hopper_kernel",
        "sigmoid_attn_bwd_dkdv_hopper_kernel",
        "sigmoid_attn_bwd_dkdv_hopper_kernel",
        "sigmoid_attn_bwd_dq_hopper_kernel",
        "sigmoid_attn_fwd_hopper_ws_kernel",
        "sigmoid_attn_bwd_dq_hopper_ws_kernel",
        "sigmoid_attn_bwd_dkdv_hopper_ws_kernel",
        "sigmoid_attn_bwd_dkdv_hopper_kernel",
        "sigmoid_attn_bwd_dkdv_hopper_kernel",
    ]
    assert [parts for *_, parts in launches[1:]] == [
        (True, True), (True, True), (None, None), (None, None), (None, None), (True, True), (False, True),
        (True, False),
    ]  # fmt: skip
    # Warp-specialized kernels: two consumers' query rows (2 x 64 at D128) per program; the dQ kernel
    # still keeps one d bias slot per 64 rows.
    assert launches[4][1] == (1, batch * heads) and launches[5][1] == (1, batch * heads)
    assert launches[6][1] == (1, batch * kv_heads)  # 2 x 64 keys per program
    assert ws_dbias.shape == (batch * heads, 2)
    # Grids: (query blocks, sequences x heads) or (key blocks, sequences x KV heads).
    assert launches[0][1] == (1, batch * heads) and launches[1][1][1] == batch * kv_heads
    assert fused.shape[0] == batch * heads and dbias.shape == (batch * heads, launches[3][1][0])


def test_a_triton_without_gluon_falls_back_to_the_portable_kernels(monkeypatch):
    import sys

    import sigcell.ops.sigmoid_attn as package

    monkeypatch.setitem(sys.modules, "triton.experimental.gluon", None)  # importing it now fails
    for name in ("hopper", "hopper_bwd", "hopper_ws", "hopper_ws_bwd"):
        monkeypatch.delitem(sys.modules, f"sigcell.ops.sigmoid_attn.{name}", raising=False)
        monkeypatch.delattr(package, name, raising=False)
    interface._gluon_kernels_available.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="do not load with triton .*portable Triton kernels run"):
            assert interface._gluon_kernels_available() is False
    finally:
        monkeypatch.undo()
        interface._gluon_kernels_available.cache_clear()
    assert interface._gluon_kernels_available() is True


def test_an_untested_triton_version_takes_the_portable_kernels_unless_asked(monkeypatch):
    import triton

    monkeypatch.setattr(triton, "__version__", "3.9.0")
    interface._gluon_kernels_available.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="tested with triton 3.6, this is 3.9.0"):
            assert interface._gluon_kernels_available() is False
        interface._gluon_kernels_available.cache_clear()
        monkeypatch.setenv("SIGCELL_GLUON_ANY_TRITON", "1")
        assert interface._gluon_kernels_available() is True
    finally:
        interface._gluon_kernels_available.cache_clear()
