"""The op as a torch custom op: registrations are consistent and torch.compile traces it whole."""

from __future__ import annotations

import torch

from sigcell import sigmoid_attn_func, sigmoid_attn_varlen_func
from sigcell.ops import cu_seqlens_from_lengths
from sigcell.ops.sigmoid_attn.interface import _sigmoid_attn_fwd


class TinyAttention(torch.nn.Module):
    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.bias = torch.nn.Parameter(torch.full((heads,), -2.0))

    def forward(self, x, seq_lens):
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).unbind(2)
        return sigmoid_attn_func(q, k, v, seq_lens_q=seq_lens, seq_lens_k=seq_lens, bias=self.bias).sum()


def test_compile_full_graph_forward_and_backward():
    torch.manual_seed(0)
    model = TinyAttention()
    x = torch.randn(3, 10, 32)
    lens = torch.tensor([10, 4, 7], dtype=torch.int32)
    eager = model(x, lens)
    eager.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # fullgraph: a break would raise
    out = compiled(x, lens)
    out.backward()
    torch.testing.assert_close(out, eager)
    for p, g in zip(model.parameters(), eager_grads, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_compile_varlen_full_graph():
    q, k, v = (torch.randn(9, 2, 8, requires_grad=True) for _ in range(3))
    cu = cu_seqlens_from_lengths(torch.tensor([4, 5], dtype=torch.int32))
    fn = torch.compile(
        lambda q, k, v: sigmoid_attn_varlen_func(q, k, v, cu, cu, 5, 5, causal=True),
        backend="aot_eager",
        fullgraph=True,
    )
    torch.testing.assert_close(fn(q, k, v), sigmoid_attn_varlen_func(q, k, v, cu, cu, 5, 5, causal=True))


def test_opcheck_registrations():
    """torch.library.opcheck: schema, fake (meta) kernel and autograd registration agree with the op."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 6, 4, 8, generator=gen, requires_grad=True)
    k = torch.randn(2, 6, 2, 8, generator=gen, requires_grad=True)
    v = torch.randn(2, 6, 2, 8, generator=gen, requires_grad=True)
    bias = torch.full((2, 4), -1.5, requires_grad=True)
    key_bias = torch.randn(2, 6, generator=gen, requires_grad=True)
    zeros = torch.zeros(2, dtype=torch.int32)
    lens = torch.tensor([6, 3], dtype=torch.int32)
    args = (q, k, v, bias, key_bias, None, zeros, lens, zeros, lens, 0.35, True, False, 6, 6, False)
    torch.library.opcheck(_sigmoid_attn_fwd, args)


def test_traced_path_makes_no_cuda_queries():
    """The per-call caches must not ask CUDA anything while torch.compile traces (the stream-capture
    query broke the graph at every attention call of a CUDA model)."""
    from sigcell.ops.sigmoid_attn import interface

    def fn(x):
        const = interface._cached(("compile-probe", 3), torch.device("cuda"), lambda: torch.ones(3))
        interface._passed_value_check(x, ("compile-probe",))
        return x + const if interface._needs_value_check(x, ("compile-probe",)) else x

    explained = torch._dynamo.explain(fn)(torch.randn(3))
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_packed_positions_trace_without_breaks_and_match_a_loop():
    from sigcell.ops.padding import packed_positions

    gen = torch.Generator().manual_seed(7)
    lengths = torch.randint(0, 6, (9,), generator=gen, dtype=torch.int32)
    lengths[[0, 4]] = 0  # empty sequences at the start and in the middle
    cu = cu_seqlens_from_lengths(lengths)
    total = int(cu[-1])
    want_seq = torch.tensor([b for b, n in enumerate(lengths.tolist()) for _ in range(n)], dtype=torch.int64)
    want_pos = torch.tensor([i for n in lengths.tolist() for i in range(n)], dtype=torch.int64)
    seq, pos = packed_positions(cu, total)
    assert torch.equal(seq, want_seq) and torch.equal(pos, want_pos)
    explained = torch._dynamo.explain(packed_positions)(cu, total)
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
