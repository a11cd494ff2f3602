"""The cell objective (MVC-style masked value prediction from the cell embedding), mask-weighted heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sigcell.model import MaskedExpressionModel, ModelConfig
from sigcell.model.heads import n_rank_buckets, rank_buckets
from sigcell.train.masking import mask_batch

from .test_model import cells, perturbed, small_config

ENCODINGS = ["binned", "continuous", "rank"]


def masked_cells(cfg: ModelConfig, seed: int, packed: bool, n: int = 5):
    gen = torch.Generator().manual_seed(seed)
    return mask_batch(cells(cfg, seed, n, packed), 0.3, cfg.value_encoding, gen)


def config(encoding: str = "binned", attention: str = "softmax", **kw) -> ModelConfig:
    kw.setdefault("cell_objective", "mvc")
    return small_config(value_encoding=encoding, max_rank=16, attention=attention, **kw)


def cell_rows(batch, b: int) -> slice | tuple[int, slice]:
    """Index of cell ``b``'s tokens in the batch's token tensors."""
    if batch.packed:
        cu = batch.cu_seqlens.tolist()
        return slice(cu[b], cu[b + 1])
    return (b, slice(0, int(batch.seq_lens[b])))


def reference_cell_loss(model: MaskedExpressionModel, batch, hidden: torch.Tensor) -> torch.Tensor:
    """The cell objective token by token, from its written formula."""
    cfg, head = model.config, model.cell_head
    total = torch.zeros((), dtype=torch.float64)
    for b in range(batch.num_cells):
        rows = cell_rows(batch, b)
        h, ids, mask, tgt = hidden[rows], batch.gene_ids[rows], batch.mask[rows], batch.targets[rows]
        cell = h[0] if cfg.pooling == "cls" or h.shape[0] == 1 else h[1:].mean(0)
        c = head.cell_proj(cell)
        for j in range(h.shape[0]):
            if not mask[j]:
                continue
            gene = tgt[j] if cfg.value_encoding == "rank" else ids[j]
            q = head.query(head.gene_norm(model.encoder.gene_embedding.weight[gene]))
            y = head.decoder(F.gelu(head.norm(q * c)))
            if cfg.value_encoding == "continuous":
                total += (y[0] - tgt[j]).double() ** 2
            else:
                rank = cfg.value_encoding == "rank"
                cls = int(math.log2(min(j, cfg.max_rank - 1))) if rank else int(tgt[j])
                total -= F.log_softmax(y.double(), -1)[cls]
    return total


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("packed", [False, True])
def test_cell_loss_equals_the_reference_and_parts_add_up(encoding, pooling, packed):
    seed = 11 * ENCODINGS.index(encoding) + 3 * (pooling == "mean") + packed
    torch.manual_seed(seed)
    cfg = config(encoding, pooling=pooling, cell_loss_weight=0.7)
    model = perturbed(MaskedExpressionModel(cfg), seed)
    batch = masked_cells(cfg, seed, packed)
    out = model(batch)
    hidden = model.encoder(batch).hidden
    assert set(out.parts) == {"expression", "cell"}
    assert all(v.dtype == torch.float32 and v.shape == () and torch.isfinite(v) for v in out.parts.values())
    assert out.parts["cell"] > 0
    torch.testing.assert_close(out.parts["cell"].double(), reference_cell_loss(model, batch, hidden),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.loss_sum, out.parts["expression"] + 0.7 * out.parts["cell"])
    assert int(out.n_masked) == int(batch.mask.sum())


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("packed", [False, True])
def test_expression_head_on_all_tokens_equals_the_boolean_index(encoding, packed):
    seed = 20 + 2 * ENCODINGS.index(encoding) + packed
    torch.manual_seed(seed)
    cfg = config(encoding, cell_objective="none")
    model = perturbed(MaskedExpressionModel(cfg), seed)
    batch = masked_cells(cfg, seed, packed)
    hidden = model.encoder(batch).hidden
    # what heads.py computed before: gather the masked states, then the loss on those rows only
    old = model.head.loss_sum(hidden[batch.mask], batch.targets[batch.mask])
    out = model(batch)
    torch.testing.assert_close(out.loss_sum, old, rtol=1e-5, atol=1e-5)
    assert set(out.parts) == {"expression"} and model.cell_head is None
    torch.testing.assert_close(out.parts["expression"], out.loss_sum)


def test_padding_rows_and_unmasked_targets_never_reach_the_losses():
    cfg = config("continuous", pooling="mean")
    torch.manual_seed(5)
    model = perturbed(MaskedExpressionModel(cfg), 5)
    batch = masked_cells(cfg, 5, packed=False)
    out = model(batch)
    noisy = batch.targets.clone()
    noisy[~batch.mask] = float("nan")  # padding and unmasked tokens: never read
    out_nan = model(type(batch)(gene_ids=batch.gene_ids, values=batch.values, seq_lens=batch.seq_lens,
                                mask=batch.mask, targets=noisy))
    torch.testing.assert_close(out_nan.parts, out.parts)
    out_nan.loss_sum.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padded_and_packed_give_the_same_losses(encoding, pooling):
    seed = 40 + ENCODINGS.index(encoding) + 5 * (pooling == "mean")
    torch.manual_seed(seed)
    cfg = config(encoding, pooling=pooling)
    model = perturbed(MaskedExpressionModel(cfg), seed)
    padded, packed = model(masked_cells(cfg, seed, False)), model(masked_cells(cfg, seed, True))
    for name in ("expression", "cell"):
        torch.testing.assert_close(padded.parts[name], packed.parts[name], rtol=1e-5, atol=1e-4, msg=name)
    torch.testing.assert_close(padded.loss_sum, packed.loss_sum, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("packed", [False, True])
def test_the_cell_objective_trains_the_pooled_embedding(pooling, packed):
    """Gradient reaches the pooled states only with the objective on, and the loss reads the embedding."""
    seed = 60 + 2 * (pooling == "mean") + packed
    grads = {}
    for objective in ("none", "mvc"):
        torch.manual_seed(seed)
        cfg = config(pooling=pooling, cell_objective=objective)
        model = perturbed(MaskedExpressionModel(cfg), seed)
        batch = masked_cells(cfg, seed, packed)
        captured = []

        def keep(module, inputs, output, captured=captured):
            output.retain_grad()
            captured.append(output)

        model.encoder.norm.register_forward_hook(keep)
        model(batch).loss_sum.backward()
        hidden = captured[0]
        if packed:
            starts = batch.cu_seqlens[:-1].long()
            cls_rows = torch.zeros(hidden.shape[0], dtype=torch.bool)
            cls_rows[starts] = True
        else:
            cls_rows = (torch.arange(hidden.shape[1]) == 0).expand(hidden.shape[0], -1)
        # rows that masked expression never touches: <cls> (cls pooling), unmasked genes (mean pooling)
        pooled_only = cls_rows if pooling == "cls" else ~cls_rows & ~batch.mask & (batch.gene_ids > 2)
        grads[objective] = hidden.grad[pooled_only].abs().sum(-1)
    assert torch.equal(grads["none"], torch.zeros_like(grads["none"]))
    assert bool((grads["mvc"] > 0).all())
    # The loss reads the embedding: a different embedding, a different loss; its gradient is nonzero.
    out = model.encoder(batch)
    emb = model.encoder.pool(out.hidden, out.layout).detach().requires_grad_(True)
    loss = model.cell_loss_sum(batch, out.hidden, out.layout, cells=emb)
    loss.backward()
    assert bool((emb.grad.abs().sum(-1) > 0).all())
    torch.testing.assert_close(loss, model(batch).parts["cell"])
    moved = model.cell_loss_sum(batch, out.hidden, out.layout, cells=emb + 0.5 * torch.randn_like(emb))
    assert not torch.allclose(moved, loss)


def test_rank_buckets_are_floor_log2_capped_at_max_rank():
    pos = torch.arange(1, 5000)
    for max_rank in (1, 2, 16, 17, 4096):
        want = torch.tensor([int(math.log2(min(p, max(max_rank - 1, 1)))) for p in pos.tolist()])
        assert torch.equal(rank_buckets(pos, max_rank), want), max_rank
        assert int(want.max()) == n_rank_buckets(max_rank) - 1


@pytest.mark.parametrize("encoding", ["binned", "continuous"])
def test_a_tiny_training_run_lowers_both_losses(encoding):
    cfg = config(encoding, pooling="mean", d_model=32, n_layers=1)
    torch.manual_seed(7)
    model = MaskedExpressionModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    curve = []
    for step in range(60):
        batch = masked_cells(cfg, 1000 + step, packed=True, n=8)
        out = model(batch)
        (out.loss_sum / out.n_masked).backward()
        optimizer.step()
        optimizer.zero_grad()
        curve.append({k: float(v.detach() / out.n_masked) for k, v in out.parts.items()})
    for name in ("expression", "cell"):
        first = sum(c[name] for c in curve[:5]) / 5
        last = sum(c[name] for c in curve[-5:]) / 5
        assert last < first - 0.1, f"{name} loss did not fall: {first:.3f} -> {last:.3f}"


def test_a_checkpoint_written_before_the_cell_objective_still_loads(tmp_path):
    import yaml

    from sigcell.model.config import LEGACY_VALUES
    from sigcell.train import TrainConfig, load_checkpoint, pretrain

    overrides = {"model.vocab_size": 67, "model.n_bins": 7, "model.d_model": 32, "model.n_layers": 1,
                 "model.n_heads": 4, "model.d_ff": 48, "model.cell_objective": "none", "data.batch_size": 4,
                 "data.synthetic_min_genes": 6, "data.synthetic_max_genes": 24, "out_dir": str(tmp_path),
                 "steps": 2, "val_every": 0, "ckpt_every": 0, "progress": False, "tensorboard": False,
                 "device": "cpu"}
    pretrain(TrainConfig.from_preset("tiny", overrides))
    for path in [tmp_path / "config.yaml", *tmp_path.glob("checkpoints/step_*/config.yaml")]:
        values = yaml.safe_load(path.read_text())  # as the code before the cell objective wrote it
        values["model"] = {k: v for k, v in values["model"].items() if k not in LEGACY_VALUES}
        path.write_text(yaml.safe_dump(values, sort_keys=False))
    run = load_checkpoint(tmp_path)
    assert run.config.model.cell_objective == "none" and run.model.cell_head is None
    batch = cells(run.config.model, 0, 3)
    assert run.model.embed(batch).shape == (3, 32)
    # Without the legacy rule the default head would be missing from the weights.
    with pytest.raises(RuntimeError, match="cell_head"):
        MaskedExpressionModel(ModelConfig(**{**run.config.model.to_dict(), "cell_objective": "mvc"})
                              ).load_state_dict(run.model.state_dict())
    # and the run resumes with its own (old) config file
    resumed = pretrain(TrainConfig.from_dict({**yaml.safe_load((tmp_path / "config.yaml").read_text()),
                                              "steps": 3}), resume=True)
    assert resumed.status == "completed" and resumed.step == 3
