"""Every invalid input gets one clear ValueError that names the problem and the fix."""

from __future__ import annotations

import math

import pytest
import torch

from sigcell import sigmoid_attn_func, sigmoid_attn_varlen_func


def qkv(b=2, lq=5, lk=5, h=4, hkv=2, d=8, dtype=torch.float32):
    return (
        torch.randn(b, lq, h, d, dtype=dtype),
        torch.randn(b, lk, hkv, d, dtype=dtype),
        torch.randn(b, lk, hkv, d, dtype=dtype),
    )


def packed(t=7, h=4, hkv=2, d=8):
    return torch.randn(t, h, d), torch.randn(t, hkv, d), torch.randn(t, hkv, d)


CU = torch.tensor([0, 3, 7], dtype=torch.int32)
I32 = torch.int32


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: sigmoid_attn_func(torch.randn(2, 5, 8), *qkv()[1:]),
            r"q must have 4 dimensions \[B, L, H, D\]",
        ),
        (
            lambda: sigmoid_attn_func(*qkv()[:2], torch.randn(2, 5, 2, 8, dtype=torch.float16)),
            "must share one dtype",
        ),
        (lambda: sigmoid_attn_func(*(t.to(torch.int32) for t in qkv())), "supported are bfloat16, float16"),
        (lambda: sigmoid_attn_func(qkv()[0], qkv()[1], torch.randn(2, 6, 2, 8)), "same shape"),
        (lambda: sigmoid_attn_func(*qkv(h=3, hkv=2)), r"multiple of the number of KV heads"),
        (lambda: sigmoid_attn_func(*qkv(d=300)), r"head dim 300 is not supported; sigcell supports 1..256"),
        (
            lambda: sigmoid_attn_func(qkv()[0], torch.randn(2, 5, 2, 16), torch.randn(2, 5, 2, 16)),
            "share the head dim",
        ),
        (lambda: sigmoid_attn_func(qkv()[0], *qkv(b=3)[1:]), "same batch size"),
        (lambda: sigmoid_attn_func(*qkv(), seq_lens_q=torch.tensor([1, 2])), "must have dtype torch.int32"),
        (lambda: sigmoid_attn_func(*qkv(), seq_lens_q=torch.tensor([1, 2, 3], dtype=I32)), r"shape \[2\]"),
        (lambda: sigmoid_attn_func(*qkv(), seq_lens_k=torch.tensor([1, 6], dtype=I32)), r"lie in \[0, 5\]"),
        (lambda: sigmoid_attn_func(*qkv(), seq_lens_k=torch.tensor([-1, 2], dtype=I32)), r"lie in \[0, 5\]"),
        (lambda: sigmoid_attn_func(*qkv(), bias=torch.zeros(3)), r"shape \[H\] = \[4\]"),
        (lambda: sigmoid_attn_func(*qkv(), bias=float("nan")), "bias must be None"),
        (lambda: sigmoid_attn_func(*qkv(), bias="learned"), "bias must be None"),
        (
            lambda: sigmoid_attn_func(*qkv(), key_bias=torch.zeros(2, 4)),
            r"key_bias must have shape \[B, Lk\]",
        ),
        (lambda: sigmoid_attn_func(*qkv(), key_bias=torch.zeros(2, 5, dtype=torch.int64)), "floating-point"),
        (lambda: sigmoid_attn_func(*qkv(), alibi_slopes=torch.zeros(3)), "alibi_slopes must be a tensor"),
        (lambda: sigmoid_attn_func(*qkv(), scale=float("inf")), "scale must be a finite float"),
        (lambda: sigmoid_attn_varlen_func(*qkv(), CU, CU, 4, 4), r"q must have 3 dimensions \[T, H, D\]"),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), CU.long(), CU, 4, 4),
            "cu_seqlens_q must have dtype torch.int32",
        ),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), torch.tensor([1, 3, 7], dtype=I32), CU, 4, 4),
            "cu_seqlens_q must start at 0",
        ),
        (
            lambda: sigmoid_attn_varlen_func(
                *packed(), torch.tensor([0, 5, 3, 7], dtype=I32), torch.tensor([0, 2, 3, 7], dtype=I32), 5, 5
            ),
            "non-decreasing",
        ),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), torch.tensor([0, 3, 6], dtype=I32), CU, 4, 4),
            r"must end at the number of packed tokens \(7\)",
        ),
        (lambda: sigmoid_attn_varlen_func(*packed(), CU, CU, 3, 4), "longest sequence has 4 tokens"),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), CU, torch.tensor([0, 7], dtype=I32), 4, 7),
            "same number of sequences",
        ),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), CU, CU, -1, 4),
            "max_seqlen_q must be a non-negative int",
        ),
        (
            lambda: sigmoid_attn_varlen_func(*packed(), CU, CU, 4, 4, key_bias=torch.zeros(6)),
            r"key_bias must have shape \[Tk\] = \[7\]",
        ),
        (lambda: sigmoid_attn_varlen_func(*packed(), CU.view(1, -1), CU, 4, 4), "1-D int32 tensor"),
    ],
)
def test_invalid_input_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_values_are_caught_again_after_an_in_place_change():
    q, k, v = qkv()
    lens = torch.tensor([5, 5], dtype=I32)
    sigmoid_attn_func(q, k, v, seq_lens_q=lens, seq_lens_k=lens)  # passes and is remembered
    lens[1] = 9
    with pytest.raises(ValueError, match=r"lie in \[0, 5\]"):
        sigmoid_attn_func(q, k, v, seq_lens_q=lens, seq_lens_k=lens)


def test_a_bad_tensor_fails_every_time():
    q, k, v = qkv()
    lens = torch.tensor([5, 7], dtype=I32)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"lie in \[0, 5\]"):
            sigmoid_attn_func(q, k, v, seq_lens_q=lens)


def test_lengths_changed_in_place_give_new_results():
    """Lengths and the default bias derived from a lengths / offsets tensor are remembered per tensor:
    an in-place change must be seen (the same result as a fresh tensor with the new values)."""
    torch.manual_seed(0)
    q, k, v = packed()
    cu = torch.tensor([0, 3, 7], dtype=I32)
    sigmoid_attn_varlen_func(q, k, v, cu, cu, 4, 4)
    cu[1] = 5
    got = sigmoid_attn_varlen_func(q, k, v, cu, cu, 5, 5)
    want = sigmoid_attn_varlen_func(q, k, v, cu.clone(), cu.clone(), 5, 5)
    torch.testing.assert_close(got, want, rtol=0, atol=0)

    qd, kd, vd = qkv()
    lens = torch.tensor([5, 2], dtype=I32)
    sigmoid_attn_func(qd, kd, vd, seq_lens_q=lens, seq_lens_k=lens)
    lens[1] = 4
    got = sigmoid_attn_func(qd, kd, vd, seq_lens_q=lens, seq_lens_k=lens)
    want = sigmoid_attn_func(qd, kd, vd, seq_lens_q=lens.clone(), seq_lens_k=lens.clone())
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def _write(kind: str, t: torch.Tensor, buf, values: list[int]) -> torch.Tensor:
    """Put ``values`` into the caller's lengths tensor behind torch's back (or through it)."""
    import numpy as np

    if kind == "numpy_view":  # t.numpy()[:] = ...: torch's version counter does not move
        t.numpy()[:] = values
    elif kind == "data":  # t.data[:] = ...: a new view with its own version counter
        t.data[:] = torch.tensor(values, dtype=t.dtype)
    elif kind == "from_numpy":  # the caller reuses one numpy buffer and wraps it each step
        buf[:] = np.asarray(values, dtype=buf.dtype)
        return torch.from_numpy(buf)
    else:  # an ordinary in-place write
        t.copy_(torch.tensor(values, dtype=t.dtype))
    return t


def _outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ValueError as err:
        return str(err)


@pytest.mark.parametrize("kind", ["numpy_view", "data", "from_numpy", "copy_"])
def test_lengths_and_offsets_mutated_between_calls_match_a_fresh_tensor(kind):
    """Fuzz: one lengths / offsets tensor reused across calls, its values changed in place in every way a
    caller can; each call gives what the same values in a fresh tensor give (result or error)."""
    import numpy as np

    rng = np.random.default_rng(17)
    q, k, v = qkv(b=3, lq=6, lk=6)
    buf = np.zeros(3, dtype=np.int32)
    lens = torch.from_numpy(buf) if kind == "from_numpy" else torch.zeros(3, dtype=I32)
    qp, kp, vp = packed(t=9)
    cu_buf = np.zeros(4, dtype=np.int32)
    cu = torch.from_numpy(cu_buf) if kind == "from_numpy" else torch.zeros(4, dtype=I32)
    for trial in range(30):
        values = rng.integers(0, 8 if trial % 3 == 0 else 7, size=3).tolist()  # 6 is the largest valid
        lens = _write(kind, lens, buf, values)
        got = _outcome(sigmoid_attn_func, q, k, v, seq_lens_q=lens, seq_lens_k=lens)
        fresh = torch.tensor(values, dtype=I32)
        want = _outcome(sigmoid_attn_func, q, k, v, seq_lens_q=fresh, seq_lens_k=fresh)
        if isinstance(want, str):
            assert got == want, (trial, values)
        else:
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f"trial {trial}: {values}")

        cuts = sorted(rng.integers(0, 10, size=2).tolist())
        offsets = [0, *cuts, 9] if trial % 4 else [0, cuts[1], cuts[0], 9 + int(rng.integers(0, 2))]
        cu = _write(kind, cu, cu_buf, offsets)
        got = _outcome(sigmoid_attn_varlen_func, qp, kp, vp, cu, cu, 9, 9)
        fresh_cu = torch.tensor(offsets, dtype=I32)
        want = _outcome(sigmoid_attn_varlen_func, qp, kp, vp, fresh_cu, fresh_cu, 9, 9)
        if isinstance(want, str):
            assert got == want, (trial, offsets)
        else:
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f"trial {trial}: {offsets}")


def test_cpu_packed_cost_follows_the_real_lengths_not_max_seqlen():
    # 26 tokens under a bound of a million: the plain-PyTorch path pads to the longest cell (issue 23 item
    # 7: it padded to max_seqlen, quadratic in it), with the same result as the tight bound.
    q, k, v = (t.requires_grad_() for t in packed(t=26))
    cu = torch.tensor([0, 11, 26], dtype=I32)
    tight = sigmoid_attn_varlen_func(q, k, v, cu, cu, 15, 15)
    loose = sigmoid_attn_varlen_func(q, k, v, cu, cu, 10**6, 10**6)
    torch.testing.assert_close(loose, tight, rtol=0, atol=0)
    grads = torch.autograd.grad(loose.square().sum(), (q, k, v))
    expected = torch.autograd.grad(tight.square().sum(), (q, k, v))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_default_bias_is_made_once_for_full_batches_and_afresh_from_caller_lengths():
    from sigcell.ops.sigmoid_attn import interface

    q = torch.randn(2, 5, 4, 8)
    own = interface._constant_lengths(2, 5, q.device)
    first = interface._head_bias(None, own, 4, q, "t", all_keys=5)
    assert interface._head_bias(None, own, 4, q, "t", all_keys=5) is first  # sigcell's constant: cached
    torch.testing.assert_close(first, torch.full((2, 4), -math.log(5)))
    lens = torch.tensor([5, 2], dtype=I32)
    a = interface._head_bias(None, lens, 4, q, "t")
    lens.data[1] = 4  # a write torch does not see: the next call still uses the new value
    b = interface._head_bias(None, lens, 4, q, "t")
    torch.testing.assert_close(b[1], torch.full((4,), -math.log(4)))
    assert a is not b
