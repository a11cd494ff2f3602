"""Closed-form attention Jacobians against autograd, the 1/4 bound, and layer Jacobians."""

import math

import pytest
import torch

from sigcell.analysis import jacobian as jac
from sigcell.model import ModelConfig
from sigcell.model.attention import Attention
from sigcell.model.layout import SeqLayout


def _logits(seed: int, rows: int, length: int, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, length, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize(("seed", "length", "scale"),
                         [(0, 2, 1.0), (1, 17, 0.3), (2, 64, 4.0), (3, 33, 20.0)])
def test_closed_form_matches_autograd(kind, seed, length, scale):
    s = _logits(seed, 5, length, scale)
    bias = -math.log(length)
    closed = jac.attention_weight_jacobian(s, kind, bias)
    auto = jac.autograd_weight_jacobian(s, kind, bias)
    torch.testing.assert_close(closed, auto, atol=1e-14, rtol=0)


@pytest.mark.parametrize("seed", [4, 5])
def test_sigmoid_jacobian_is_diagonal_and_bounded(seed):
    s = _logits(seed, 8, 40, 3.0)
    s[0, :5] = torch.tensor([0.0, 1e-9, -1e-9, 50.0, -50.0], dtype=torch.float64)  # 0 is the maximum point
    J = jac.sigmoid_jacobian(s)
    assert torch.count_nonzero(J - torch.diag_embed(torch.diagonal(J, dim1=-2, dim2=-1))) == 0
    assert float(J.max()) <= 0.25 and float(J.max()) == pytest.approx(0.25, abs=1e-12)
    assert float(J.min()) >= 0.0


@pytest.mark.parametrize("seed", [6, 7])
def test_softmax_offdiag_is_half_and_spectral_norm(seed):
    s = _logits(seed, 6, 50, 2.0)
    m = jac.jacobian_metrics(jac.softmax_jacobian(s))
    assert m["offdiag_fraction"] == pytest.approx(0.5, abs=1e-12)
    assert m["spectral_norm"] <= 0.5 + 1e-12
    p = torch.softmax(s, -1)
    eig = torch.linalg.eigvalsh(jac.softmax_jacobian(s))[..., -1]
    torch.testing.assert_close(jac.softmax_spectral_norm(p), eig, atol=1e-12, rtol=1e-10)


def test_spectral_norm_ties_and_uniform():
    p = torch.tensor([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1]], dtype=torch.float64)
    eig = torch.linalg.eigvalsh(torch.diag_embed(p) - p[:, :, None] * p[:, None, :])[:, -1]
    torch.testing.assert_close(jac.softmax_spectral_norm(p), eig, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("seed", [8, 9])
def test_row_metrics_equal_materialized_metrics(kind, seed):
    s = _logits(seed, 7, 30, 3.0)
    fast = jac.row_metrics(s, kind, bias=-1.0)
    full = jac.jacobian_metrics(jac.attention_weight_jacobian(s, kind, bias=-1.0))
    for key in full:
        assert fast[key] == pytest.approx(full[key], rel=1e-9, abs=1e-15), key


def test_sweep_has_every_point_and_checks_pass():
    out = jac.sweep_weights([8, 32], [1.0, 8.0], rows=4, seed=10)
    assert len(out["rows"]) == 2 * 2 * 2 and len(out["checks"]) == 8
    assert max(c["max_err"] for c in out["checks"]) < 1e-12
    for r in out["rows"]:
        assert r["max_abs"] <= (0.25 if r["kind"] == "sigmoid" else 0.5)


@pytest.mark.parametrize(("lengths", "scales"), [([1], [1.0]), ([], [1.0]), ([8], [0.0]), ([8], [math.inf])])
def test_sweep_rejects_bad_grids(lengths, scales):
    with pytest.raises(ValueError, match=r"lengths|scales"):
        jac.sweep_weights(lengths, scales)


def test_bad_kind():
    with pytest.raises(ValueError, match=r"softmax' or 'sigmoid"):
        jac.attention_weight_jacobian(torch.zeros(2, 3), "relu")


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("options", [{}, {"qk_norm": True, "gated_attention": True, "n_kv_heads": 2}])
def test_layer_fn_matches_attention_module(kind, options):
    torch.manual_seed(11)
    cfg = ModelConfig(vocab_size=20, d_model=32, n_layers=1, n_heads=4, attention=kind, **options)
    attn = Attention(cfg)
    for p in attn.parameters():  # non-zero biases too
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(1, 12, 32)
    expected, _ = attn(x, SeqLayout(seq_lens=torch.tensor([12], dtype=torch.int32)))
    got = jac.attention_layer_fn(attn)(x[0])
    torch.testing.assert_close(got, expected[0], atol=1e-5, rtol=1e-5)


def test_layer_jacobian_matches_finite_differences_and_metrics():
    torch.manual_seed(12)
    attn = Attention(ModelConfig(vocab_size=20, d_model=8, n_layers=1, n_heads=2)).double()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(5, 8, dtype=torch.float64)
    results = {}
    for kind in ("softmax", "sigmoid"):
        f = jac.attention_layer_fn(attn, kind)
        J = jac.layer_jacobian(f, x)
        assert J.shape == (5, 8, 5, 8)
        eps, (i, c) = 1e-6, (2, 3)
        dx = torch.zeros_like(x)
        dx[i, c] = eps
        fd = (f(x + dx) - f(x - dx)) / (2 * eps)
        torch.testing.assert_close(J[:, :, i, c], fd, atol=1e-7, rtol=1e-6)
        results[kind] = jac.layer_jacobian_metrics(J)
        assert 0.0 < results[kind]["offdiag_fraction"] < 1.0
    with pytest.raises(ValueError, match=r"\[L, d, L, d\]"):
        jac.layer_jacobian_metrics(torch.zeros(3, 4, 3, 5))


@pytest.mark.parametrize(("seed", "shape"), [(14, (40, 40)), (15, (30, 50))])
def test_power_iteration_spectral_norm(seed, shape):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(*shape, generator=g, dtype=torch.float64)
    assert jac.spectral_norm(m) == pytest.approx(float(torch.linalg.matrix_norm(m, ord=2)), rel=1e-6)
    assert jac.spectral_norm(torch.zeros(3, 3)) == 0.0
