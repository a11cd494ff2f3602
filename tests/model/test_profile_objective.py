"""The profile cell objective: the cell embedding predicts the cell's expression profile (vocabulary-wide)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sigcell.model import MaskedExpressionModel
from sigcell.model.heads import ProfileHead

from .test_cell_objective import ENCODINGS, cell_rows, config, masked_cells
from .test_model import perturbed


def reference_profile_loss(model: MaskedExpressionModel, batch, hidden: torch.Tensor) -> torch.Tensor:
    """Sum over cells of (masked count) x cross-entropy against the profile, cell by cell in float64."""
    cfg, head = model.config, model.cell_head
    total = torch.zeros((), dtype=torch.float64)
    for b in range(batch.num_cells):
        rows = cell_rows(batch, b)
        h, ids, vals = hidden[rows], batch.gene_ids[rows], batch.values[rows]
        mask, tgt = batch.mask[rows], batch.targets[rows]
        cell = h[0] if cfg.pooling == "cls" or h.shape[0] == 1 else h[1:].mean(0)
        log_p = F.log_softmax(head.decoder(head.norm(cell)).double(), -1)
        weights: dict[int, float] = {}
        for j in range(1, h.shape[0]):
            gene = int(tgt[j]) if (cfg.value_encoding == "rank" and mask[j]) else int(ids[j])
            w = 1.0 if cfg.value_encoding == "rank" else max(float(tgt[j] if mask[j] else vals[j]), 0.0)
            weights[gene] = weights.get(gene, 0.0) + w
        z = sum(weights.values())
        if z == 0:
            continue
        ce = -sum(w / z * log_p[g] for g, w in weights.items())
        total += int(mask.sum()) * ce
    return total


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("packed", [False, True])
def test_profile_loss_equals_the_reference(encoding, pooling, packed):
    seed = 100 + 7 * ENCODINGS.index(encoding) + 3 * (pooling == "mean") + packed
    torch.manual_seed(seed)
    cfg = config(encoding, pooling=pooling, cell_objective="profile", cell_loss_weight=0.5)
    model = perturbed(MaskedExpressionModel(cfg), seed)
    assert isinstance(model.cell_head, ProfileHead)
    batch = masked_cells(cfg, seed, packed)
    out = model(batch)
    hidden = model.encoder(batch).hidden
    assert out.parts["cell"] > 0 and torch.isfinite(out.parts["cell"])
    torch.testing.assert_close(out.parts["cell"].double(), reference_profile_loss(model, batch, hidden),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.loss_sum, out.parts["expression"] + 0.5 * out.parts["cell"])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_profile_loss_is_the_same_padded_and_packed(encoding):
    seed = 130 + ENCODINGS.index(encoding)
    torch.manual_seed(seed)
    cfg = config(encoding, cell_objective="profile")
    model = perturbed(MaskedExpressionModel(cfg), seed)
    padded, packed = model(masked_cells(cfg, seed, False)), model(masked_cells(cfg, seed, True))
    torch.testing.assert_close(padded.parts["cell"], packed.parts["cell"], rtol=1e-5, atol=1e-4)


def test_the_profile_target_reads_true_values_of_masked_tokens_and_ignores_padding():
    cfg = config("binned", cell_objective="profile")
    torch.manual_seed(5)
    model = perturbed(MaskedExpressionModel(cfg), 5)
    batch = masked_cells(cfg, 5, packed=False)
    ids, weight = model.cell_head.token_weights(batch)
    in_cell = torch.arange(ids.shape[1]).view(1, -1) < batch.seq_lens.view(-1, 1)
    genes = in_cell & (batch.gene_ids > 2)
    want = torch.where(batch.mask, batch.targets, batch.values).float()
    torch.testing.assert_close(weight[genes], want[genes])
    assert bool((weight[~genes] == 0).all())  # <cls>, padding
    # whatever the padding slots hold never changes the loss
    noisy = batch.values.clone()
    noisy[~in_cell] = 40
    ids_noisy = batch.gene_ids.clone()
    ids_noisy[~in_cell] = 7
    moved = type(batch)(gene_ids=ids_noisy, values=noisy, seq_lens=batch.seq_lens, mask=batch.mask,
                        targets=batch.targets)
    hidden = model.encoder(batch)
    emb = model.encoder.pool(hidden.hidden, hidden.layout)
    torch.testing.assert_close(model.cell_head.loss_per_cell(emb, moved, None),
                               model.cell_head.loss_per_cell(emb, batch, None))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_the_profile_gradient_reaches_the_pooled_embedding(pooling):
    cfg = config(pooling=pooling, cell_objective="profile")
    torch.manual_seed(9)
    model = perturbed(MaskedExpressionModel(cfg), 9)
    batch = masked_cells(cfg, 9, packed=True)
    out = model.encoder(batch)
    emb = model.encoder.pool(out.hidden, out.layout).detach().requires_grad_(True)
    loss = model.cell_loss_sum(batch, out.hidden, out.layout, cells=emb)
    loss.backward()
    assert bool((emb.grad.abs().sum(-1) > 0).all())


def test_a_tiny_training_run_separates_two_gene_programmes():
    """Cells of two types that share most genes and differ in a few type-specific ones (values random):
    after a short profile-objective run the <cls> embedding of a held-out cell lies nearer its own type's
    centroid, where the random init does little better than chance."""
    from sigcell.data.batch import CellBatch

    torch.manual_seed(3)
    cfg = config("binned", cell_objective="profile", d_model=32, n_layers=1, vocab_size=3 + 40)
    model = MaskedExpressionModel(cfg)
    shared, specific = torch.arange(3, 33), [torch.arange(33, 38), torch.arange(38, 43)]

    def make(n: int, gen: torch.Generator):
        types = torch.randint(0, 2, (n,), generator=gen)
        ids, vals = [], []
        for t in types.tolist():
            genes = torch.cat([shared[torch.randperm(30, generator=gen)[:10]],
                               specific[t][torch.randperm(5, generator=gen)[:2]]])
            ids.append(torch.cat([torch.tensor([1]), genes]))
            vals.append(torch.cat([torch.tensor([0]), torch.randint(1, cfg.n_bins, (12,), generator=gen)]))
        batch = CellBatch(gene_ids=torch.stack(ids), values=torch.stack(vals),
                          seq_lens=torch.full((n,), 13, dtype=torch.int32))
        return batch, types

    from sigcell.train.masking import mask_batch

    gen = torch.Generator().manual_seed(0)
    test, types = make(64, torch.Generator().manual_seed(1))

    def accuracy() -> float:
        with torch.no_grad():
            emb = model.embed(test)
        centroids = torch.stack([emb[types == t].mean(0) for t in (0, 1)])
        return float((torch.cdist(emb, centroids).argmin(1) == types).float().mean())

    before = accuracy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        batch, _ = make(16, gen)
        out = model(mask_batch(batch, 0.2, "binned", gen))
        (out.parts["cell"] / out.n_masked).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = accuracy()
    assert after > 0.95 and after > before + 0.1, (before, after)
