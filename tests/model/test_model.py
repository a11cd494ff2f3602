"""CellEncoder: padded == packed, sigmoid <-> softmax by config only, each option, pooling, analysis hook."""

from __future__ import annotations

import pytest
import torch

from sigcell.model import CellEncoder, MaskedExpressionModel, ModelConfig, layout_of
from sigcell.ops import pack_padded
from sigcell.train.masking import mask_batch
from sigcell.train.synthetic import SyntheticCells

OPTIONS = {
    "plain": {},
    "qk_norm": {"qk_norm": True},
    "layer_scale": {"layer_scale": True, "layer_scale_init": 0.5},
    "learned_bias": {"sigmoid_bias": "learned"},
    "gated": {"gated_attention": True},
    "gene_key_bias": {"gene_key_bias": True},
    "gqa": {"n_kv_heads": 2},
    "rmsnorm": {"norm": "rmsnorm"},
}


def small_config(**kw) -> ModelConfig:
    base = {"vocab_size": 83, "n_bins": 7, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 48}
    return ModelConfig(**{**base, **kw})


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every parameter off its init (zero-initialized options would otherwise be no-ops)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def cells(cfg: ModelConfig, seed: int, n: int = 5, packed: bool = True):
    src = SyntheticCells(cfg.vocab_size, cfg.value_encoding, cfg.n_bins, 3, 20, 3, seed)
    return src.batch(seed, n, packed=packed)


@pytest.mark.parametrize("attention", ["sigmoid", "softmax"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_padded_and_packed_give_the_same_outputs_and_gradients(attention, option):
    seed = hash((attention, option)) % 1000
    torch.manual_seed(seed)
    cfg = small_config(attention=attention, **OPTIONS[option])
    model = perturbed(MaskedExpressionModel(cfg), seed)
    padded, packed = cells(cfg, seed, packed=False), cells(cfg, seed, packed=True)
    out_pad, out_pack = model.encoder(padded), model.encoder(packed)
    torch.testing.assert_close(pack_padded(out_pad.hidden, out_pad.layout.cu()), out_pack.hidden,
                               atol=1e-5, rtol=1e-5)
    grads = []
    for batch in (padded, packed):
        model.zero_grad()
        masked = mask_batch(batch, 0.3, cfg.value_encoding, torch.Generator().manual_seed(seed))
        model(masked).loss_sum.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("encoding", ["continuous", "binned", "rank"])
def test_every_value_encoding_runs_padded_and_packed(encoding):
    cfg = small_config(value_encoding=encoding, max_rank=16)
    torch.manual_seed(3)
    model = perturbed(MaskedExpressionModel(cfg), 3)
    losses = []
    for packed in (False, True):
        batch = mask_batch(cells(cfg, 11, packed=packed), 0.3, encoding, torch.Generator().manual_seed(0))
        losses.append(model(batch).loss_sum)
    torch.testing.assert_close(losses[0], losses[1], atol=1e-4, rtol=1e-5)
    assert torch.isfinite(losses[0]) and losses[0] > 0


def test_sigmoid_and_softmax_differ_only_in_the_attention_function():
    torch.manual_seed(0)
    sig = MaskedExpressionModel(small_config(attention="sigmoid"))
    torch.manual_seed(0)
    soft = MaskedExpressionModel(small_config(attention="softmax"))
    sd_sig, sd_soft = sig.state_dict(), soft.state_dict()
    assert sd_sig.keys() == sd_soft.keys()
    for k in sd_sig:
        assert torch.equal(sd_sig[k], sd_soft[k]), k
    batch = cells(sig.config, 5)
    h_sig, h_soft = sig.encoder(batch).hidden, soft.encoder(batch).hidden
    assert not torch.allclose(h_sig, h_soft, atol=1e-4)
    # Swapping the attention kind of the trained layers reproduces the other model exactly.
    for block in sig.encoder.blocks:
        block.attn.kind = "softmax"
    torch.testing.assert_close(sig.encoder(batch).hidden, h_soft)


@pytest.mark.parametrize("option", [o for o in OPTIONS if o not in ("plain", "gqa", "rmsnorm")])
def test_each_option_adds_parameters_that_learn(option):
    torch.manual_seed(1)
    off = MaskedExpressionModel(small_config())
    on = MaskedExpressionModel(small_config(**OPTIONS[option]))
    extra = set(dict(on.named_parameters())) - set(dict(off.named_parameters()))
    assert extra, f"option {option} added no parameter"
    batch = mask_batch(cells(on.config, 2), 0.3, "binned", torch.Generator().manual_seed(2))
    on(batch).loss_sum.backward()
    params = dict(on.named_parameters())
    for name in extra:
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name


def test_learned_bias_at_minus_log_n_equals_the_default_bias():
    cfg = small_config(sigmoid_bias="learned")
    torch.manual_seed(4)
    learned = perturbed(CellEncoder(cfg), 4)
    default = CellEncoder(small_config())
    default.load_state_dict({k: v for k, v in learned.state_dict().items() if not k.endswith("attn.bias")})
    n = 9  # every cell has 9 tokens -> default bias -log(9)
    batch = SyntheticCells(cfg.vocab_size, "binned", cfg.n_bins, n - 1, n - 1, 2, 0).batch(0, 3)
    with torch.no_grad():
        for block in learned.blocks:
            block.attn.bias.fill_(-torch.log(torch.tensor(float(n))).item())
    torch.testing.assert_close(learned(batch).hidden, default(batch).hidden, atol=1e-5, rtol=1e-5)


def test_softmax_ignores_the_sigmoid_bias_setting():
    model = CellEncoder(small_config(attention="softmax", sigmoid_bias="learned"))
    assert all(block.attn.bias is None for block in model.blocks)


@pytest.mark.parametrize("attention", ["sigmoid", "softmax"])
@pytest.mark.parametrize("packed", [False, True])
def test_attention_maps_match_the_fast_path(attention, packed):
    cfg = small_config(attention=attention, gene_key_bias=True, gated_attention=True)
    torch.manual_seed(6)
    model = perturbed(CellEncoder(cfg), 6)
    batch = cells(cfg, 6, packed=packed)
    fast = model(batch).hidden
    slow = model(batch, return_attention=True)
    torch.testing.assert_close(slow.hidden, fast, atol=1e-5, rtol=1e-5)
    maps = model.attention_maps(batch)
    assert len(maps) == cfg.n_layers
    lens = layout_of(batch).lengths().tolist()
    for probs in maps:
        assert probs.shape == (len(lens), cfg.n_heads, max(lens), max(lens))
        for b, n in enumerate(lens):
            inside = probs[b, :, :n, :n]
            assert probs[b].sum() == pytest.approx(inside.sum().item())  # zero outside the cell
            if attention == "softmax":
                torch.testing.assert_close(inside.sum(-1), torch.ones_like(inside.sum(-1)))
            else:
                assert bool(((inside > 0) & (inside < 1)).all())


def test_padding_width_and_content_do_not_change_outputs():
    cfg = small_config()
    torch.manual_seed(7)
    model = perturbed(CellEncoder(cfg), 7)
    batch = cells(cfg, 7, packed=False)
    wide_ids = torch.randint(3, cfg.vocab_size, (batch.gene_ids.shape[0], batch.gene_ids.shape[1] + 9))
    wide_vals = torch.randint(0, cfg.n_bins, wide_ids.shape)
    wide_ids[:, : batch.gene_ids.shape[1]] = batch.gene_ids
    wide_vals[:, : batch.gene_ids.shape[1]] = batch.values
    valid = torch.arange(wide_ids.shape[1]) < batch.seq_lens.view(-1, 1)
    wide_ids[~valid] = torch.randint(3, cfg.vocab_size, (int((~valid).sum()),))  # garbage in the padding
    wide = type(batch)(gene_ids=wide_ids, values=wide_vals, seq_lens=batch.seq_lens)
    for pooling in ("cls", "mean"):
        torch.testing.assert_close(model.embed(wide, pooling), model.embed(batch, pooling),
                                   atol=1e-5, rtol=1e-5)


def test_pooling_definitions():
    cfg = small_config()
    torch.manual_seed(8)
    model = perturbed(CellEncoder(cfg), 8)
    batch = cells(cfg, 8, packed=True)
    out = model(batch)
    cu = batch.cu_seqlens.tolist()
    cls = model.pool(out.hidden, out.layout, "cls")
    mean = model.pool(out.hidden, out.layout, "mean")
    for b in range(len(cu) - 1):
        torch.testing.assert_close(cls[b], out.hidden[cu[b]])
        torch.testing.assert_close(mean[b], out.hidden[cu[b] + 1 : cu[b + 1]].mean(0), atol=1e-5, rtol=1e-5)
    assert model.embed(batch).shape == (batch.num_cells, cfg.d_model)
    with pytest.raises(ValueError, match="pooling must be 'cls' or 'mean'"):
        model.embed(batch, "max")


def test_attention_stats_are_recorded_on_request_only():
    cfg = small_config()
    model = perturbed(CellEncoder(cfg), 9)
    batch = cells(cfg, 9)
    model(batch)
    assert model.attention_stats() == {}
    model.set_record_stats(True)
    model(batch)
    stats = model.attention_stats()
    assert set(stats) == {f"layer{i}/{n}" for i in range(2) for n in
                          ("logit_max", "logit_min", "logit_mean", "logit_std", "prob_max", "row_mass")}
    assert stats["layer0/logit_max"] >= stats["layer0/logit_mean"] >= stats["layer0/logit_min"]
    # the first cell's logits, recomputed by the analysis path
    probs = model.attention_maps(batch)[0][0]
    n = int(batch.cu_seqlens[1])
    assert stats["layer0/prob_max"] == pytest.approx(probs[:, :n, :n].amax(-1).mean().item(), rel=1e-4)


def test_batch_checks_name_the_problem():
    cfg = small_config()
    model = CellEncoder(cfg)
    batch = cells(cfg, 1, packed=False)
    bad_ids = type(batch)(gene_ids=batch.gene_ids.clamp(max=cfg.vocab_size - 1) + 5, values=batch.values,
                          seq_lens=batch.seq_lens)
    with pytest.raises(ValueError, match=r"gene ids must lie in \[0, vocab_size=83\)"):
        model(bad_ids)
    float_vals = type(batch)(gene_ids=batch.gene_ids, values=batch.values.float(), seq_lens=batch.seq_lens)
    with pytest.raises(ValueError, match="'binned' needs int64 bins"):
        model(float_vals)
    high_bins = type(batch)(gene_ids=batch.gene_ids, values=batch.values + cfg.n_bins,
                            seq_lens=batch.seq_lens)
    with pytest.raises(ValueError, match=r"binned values must lie in \[0, n_bins=7\)"):
        model(high_bins)
    lens64 = type(batch)(gene_ids=batch.gene_ids, values=batch.values, seq_lens=batch.seq_lens.long())
    with pytest.raises(ValueError, match="seq_lens must be int32"):
        model(lens64)
    with pytest.raises(ValueError, match="needs a masked batch"):
        MaskedExpressionModel(cfg)(batch)
