"""Pretraining heads and the encoder + heads module the trainer runs.

Two objectives, both summed over the masked tokens so the trainer's normalization by the step's masked
count applies to each:

* masked expression (:class:`MaskedExpressionHead`): each masked token's final state predicts its value;
* the cell objective, one of

  - ``"mvc"`` (:class:`CellObjectiveHead`): the pooled cell embedding together with the gene's input
    embedding predicts the same value (masked value prediction, in the spirit of scGPT's MVC);
  - ``"profile"`` (:class:`ProfileHead`): the pooled cell embedding alone predicts the cell's whole
    expression profile as a distribution over the vocabulary: which genes the cell expresses, and how
    much. MVC asks only about genes the cell expresses, whose per-cell bins follow mostly from the gene's
    identity, so it can be solved without the cell embedding knowing the cell; the profile cannot.

Every head runs on all tokens and weights the loss by the mask instead of gathering the masked tokens
(a boolean index has a data-dependent shape: a device sync and a ``torch.compile`` graph break).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sigcell.data.batch import CellBatch
from sigcell.model.config import N_SPECIAL_TOKENS, ModelConfig
from sigcell.model.encoder import CellEncoder, positions
from sigcell.model.layout import SeqLayout
from sigcell.model.norm import make_norm
from sigcell.ops.padding import packed_positions

__all__ = ["CellObjectiveHead", "MaskedExpressionHead", "MaskedExpressionModel", "PretrainOutput",
           "ProfileHead", "rank_buckets"]

IGNORE = -100  # cross-entropy target of the tokens that carry no loss


def masked_loss_sum(pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None,
                    kind: str) -> torch.Tensor:
    """float32 loss summed over the tokens where ``mask`` is True (all tokens when ``mask`` is None).

    Parameters
    ----------
    pred
        ``[..., out]`` predictions: ``out = 1`` for ``kind="regression"``, else class logits.
    targets
        ``[...]`` true values (regression) or class indices; entries outside the mask are never read.
    mask
        bool ``[...]`` or None.
    kind
        ``"regression"`` (squared error) or anything else (cross-entropy).
    """
    pred = pred.float()
    if kind == "regression":
        values = targets.float() if mask is None else torch.where(mask, targets.float(), 0.0)
        err = (pred.squeeze(-1) - values).pow(2)
        return err.sum() if mask is None else torch.where(mask, err, 0.0).sum()
    classes = targets.long() if mask is None else torch.where(mask, targets.long(), IGNORE)
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), classes.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")


def rank_buckets(pos: torch.Tensor, max_rank: int) -> torch.Tensor:
    """int64 log2 bucket of rank positions: ``floor(log2(min(pos, max_rank - 1)))`` for ``pos >= 1``.

    Buckets ``[1], [2, 3], [4, 7], ...``; the last one also holds every position the encoder cannot tell
    apart (``>= max_rank - 1`` share one rank embedding). Integer comparisons, exact for any position.
    """
    count = max(1, (max_rank - 1).bit_length())
    bounds = torch.tensor([2**k for k in range(1, count)], dtype=torch.int64, device=pos.device)
    return torch.bucketize(pos.to(torch.int64).clamp(min=1), bounds, right=True)


def n_rank_buckets(max_rank: int) -> int:
    """Number of classes of :func:`rank_buckets`."""
    return max(1, (max_rank - 1).bit_length())


class MaskedExpressionHead(nn.Module):
    """Predicts the masked tokens from their final states.

    * continuous values: regression (squared error) of the value;
    * binned values: cross-entropy over the ``n_bins`` bins;
    * rank encoding: cross-entropy over the gene vocabulary (masked gene-identity prediction, as
      Geneformer).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.objective = config.objective
        out = {"regression": 1, "bins": config.n_bins, "gene_id": config.vocab_size}[self.objective]
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.act = nn.GELU()
        self.norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.decoder = nn.Linear(config.d_model, out)
        for lin in (self.dense, self.decoder):
            nn.init.normal_(lin.weight, std=config.init_std)
            nn.init.zeros_(lin.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Predictions ``[..., out]`` (``out`` = 1, ``n_bins`` or ``vocab_size``) for states ``[..., d]``."""
        return self.decoder(self.norm(self.act(self.dense(states))))

    def loss_sum(self, states: torch.Tensor, targets: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """Summed (not averaged) float32 loss over the masked tokens; the trainer normalizes it.

        Parameters
        ----------
        states
            ``[..., d]`` final states: of every token (with ``mask``) or of the masked tokens only.
        targets
            ``[...]`` true values / bins / gene ids.
        mask
            bool ``[...]``: the tokens that count; None counts every row of ``states``.
        """
        return masked_loss_sum(self(states), targets, mask, self.objective)


class CellObjectiveHead(nn.Module):
    """Masked value prediction from the cell embedding and the gene embedding (``cell_objective="mvc"``).

    For a masked gene token ``j`` of cell ``c``, with ``h_c`` the pooled cell embedding (``config.pooling``,
    from the encoder's final states) and ``e_j`` the gene's input embedding (its gene-id embedding only;
    the masked value never enters it)::

        q_j = W_2 GELU(W_1 norm_g(e_j) + b_1) + b_2         # the gene as a query        [d]
        z_j = q_j * (W_c h_c + b_c)                          # elementwise (bilinear)     [d]
        y_j = W_o GELU(norm_z(z_j)) + b_o                    # small decoder              [out]

    and the loss of ``y_j`` against the token's target:

    * binned: cross-entropy over the ``n_bins`` bins of the masked value;
    * continuous: squared error of the value (``out = 1``);
    * rank: the value of a gene is its rank, so the head predicts the masked gene's rank bucket
      (:func:`rank_buckets`: ``floor(log2(rank))``, ``out`` = ``n_rank_buckets(max_rank)`` classes) from
      the true gene id's embedding: "how highly does this cell express gene g?". The rank input hides the
      masked gene's identity but not its position, so the cell embedding must know which genes the cell
      expresses to answer.

    The only route from the cell's other tokens to ``y_j`` is ``h_c``, so this loss trains the embedding
    that ``embed`` returns.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.objective = config.objective
        self.max_rank = config.max_rank
        d = config.d_model
        out = {"regression": 1, "bins": config.n_bins, "gene_id": n_rank_buckets(config.max_rank)}
        # The gene-embedding table is tiny at init (init_std): the norm puts the query at unit scale.
        self.gene_norm = make_norm(config.norm, d, config.norm_eps)
        self.query = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.cell_proj = nn.Linear(d, d)
        self.norm = make_norm(config.norm, d, config.norm_eps)
        self.act = nn.GELU()
        self.decoder = nn.Linear(d, out[self.objective])
        for lin in (self.query[0], self.query[2], self.cell_proj, self.decoder):
            nn.init.normal_(lin.weight, std=config.init_std)
            nn.init.zeros_(lin.bias)

    def forward(self, cells: torch.Tensor, genes: torch.Tensor, cell_of_token: torch.Tensor | None
                ) -> torch.Tensor:
        """Predictions for every token.

        Parameters
        ----------
        cells
            ``[B, d]`` pooled cell embeddings.
        genes
            ``[B, L, d]`` (padded) or ``[T, d]`` (packed) gene input embeddings.
        cell_of_token
            int64 ``[T]``: the cell of each packed token; None for the padded layout.

        Returns
        -------
        ``[B, L, out]`` or ``[T, out]``.
        """
        c = self.cell_proj(cells)
        c = c.unsqueeze(1) if cell_of_token is None else c[cell_of_token]
        z = self.query(self.gene_norm(genes)) * c
        return self.decoder(self.act(self.norm(z)))

    def targets(self, batch: CellBatch, layout: SeqLayout) -> torch.Tensor:
        """Each token's target: its value / bin, or for rank encoding its rank bucket."""
        if self.objective == "gene_id":
            return rank_buckets(positions(layout, batch.gene_ids), self.max_rank)
        return batch.targets

    def loss_sum(self, cells: torch.Tensor, genes: torch.Tensor, cell_of_token: torch.Tensor | None,
                 targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """float32 loss summed over the masked tokens (arguments as :meth:`forward`, plus the tokens'
        ``targets`` and bool ``mask``, both shaped like the tokens)."""
        return masked_loss_sum(self(cells, genes, cell_of_token), targets, mask, self.objective)


class ProfileHead(nn.Module):
    """The cell's expression profile from its embedding alone (``cell_objective="profile"``).

    With ``h_c`` the pooled cell embedding, the head predicts a distribution over the vocabulary,
    ``softmax(W norm(h_c) + b)``, and the loss is its cross-entropy against the cell's own profile
    ``p_g = w_g / sum w`` over the genes ``g`` the cell holds, with the weight ``w_g`` the expression of
    ``g``: its bin (binned), its value (continuous, clamped at 0) or 1 (rank: every listed gene). The
    targets use the true value of masked tokens too; specials and padding never count.

    ``d_model`` numbers must say which genes a cell expresses out of the whole vocabulary, so the
    embedding is pushed to encode the cell's gene programme, the thing cell types differ by (a
    multinomial factor model of the profile, decoded linearly as PCA's components are). The bias ``b``
    absorbs the average profile, so ``h_c`` encodes how this cell deviates from it.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.value_encoding = config.value_encoding
        self.norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.decoder = nn.Linear(config.d_model, config.vocab_size)
        nn.init.normal_(self.decoder.weight, std=config.init_std)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        """``[B, vocab_size]`` logits of the profile from ``[B, d]`` cell embeddings."""
        return self.decoder(self.norm(cells))

    def token_weights(self, batch: CellBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The true gene id and the profile weight of every token (0 for specials and padding)."""
        ids, values = batch.gene_ids, batch.values
        if batch.mask is not None and batch.targets is not None:
            if self.value_encoding == "rank":
                ids = torch.where(batch.mask, batch.targets, ids)
            else:
                values = torch.where(batch.mask, batch.targets.to(values.dtype), values)
        if self.value_encoding == "rank":
            weight = torch.ones_like(ids, dtype=torch.float32)
        else:
            weight = values.float().clamp(min=0.0)
        weight = torch.where(ids >= N_SPECIAL_TOKENS, weight, 0.0)
        return ids, weight

    def loss_per_cell(self, cells: torch.Tensor, batch: CellBatch, cell_of_token: torch.Tensor | None
                      ) -> torch.Tensor:
        """float32 ``[B]``: each cell's cross-entropy against its profile (0 for a cell without genes).

        Padded batches have at most one token per (cell, gene), so the dense target is built with a
        scatter of static shape (no device sync; ``torch.compile`` keeps one graph).
        """
        ids, weight = self.token_weights(batch)
        n_cells = cells.shape[0]
        if cell_of_token is None:  # padded: [B, L]; padding carries weight 0
            in_cell = torch.arange(ids.shape[1], device=ids.device).view(1, -1) < batch.seq_lens.view(-1, 1)
            weight = torch.where(in_cell, weight, 0.0)
            rows = torch.arange(n_cells, device=ids.device).view(-1, 1).expand_as(ids)
        else:
            rows = cell_of_token
        flat = (rows.reshape(-1) * self.decoder.out_features + ids.reshape(-1).long())
        target = weight.new_zeros(n_cells * self.decoder.out_features)
        target = target.index_add(0, flat, weight.reshape(-1)).view(n_cells, -1)
        total = target.sum(1, keepdim=True)
        target = target / total.clamp(min=1e-12)
        log_p = F.log_softmax(self(cells).float(), dim=-1)
        return -(target * log_p).sum(1)


@dataclass
class PretrainOutput:
    """What :meth:`MaskedExpressionModel.forward` returns.

    Attributes
    ----------
    loss_sum
        float32 scalar: the training loss summed over this batch's masked tokens,
        ``parts["expression"] + cell_loss_weight * parts["cell"]``.
    n_masked
        int64 scalar: the number of masked tokens.
    parts
        float32 scalars, each summed over the masked tokens and unweighted: ``"expression"`` (masked
        expression; comparable across cell objectives) and, with a cell objective, ``"cell"``. Divide by
        the masked count, as ``loss_sum``.
    """

    loss_sum: torch.Tensor
    n_masked: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class MaskedExpressionModel(nn.Module):
    """A :class:`CellEncoder` with its pretraining heads; what pretraining optimizes and saves.

    Parameters
    ----------
    config
        The architecture (shared by the encoder and the heads); ``config.cell_objective`` adds the
        :class:`CellObjectiveHead` (``cell_head``) beside the masked-expression ``head``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = CellEncoder(config)
        self.head = MaskedExpressionHead(config)
        heads = {"mvc": CellObjectiveHead, "profile": ProfileHead}
        self.cell_head = heads[config.cell_objective](config) if config.cell_objective in heads else None

    def forward(self, batch: CellBatch) -> PretrainOutput:
        """Loss of a masked batch (``batch.mask`` and ``batch.targets`` set, see ``sigcell.train.masking``).

        ``targets`` has the shape of ``gene_ids``; only its masked entries are read. No device sync and
        no data-dependent shape, so ``torch.compile`` traces it in one graph.
        """
        if batch.mask is None or batch.targets is None:
            msg = ("MaskedExpressionModel needs a masked batch (mask and targets set); apply "
                   "sigcell.train.mask_batch(batch, ...) first, or call .encoder / .embed for inference")
            raise ValueError(msg)
        out = self.encoder(batch)
        mask = batch.mask
        expression = self.head.loss_sum(out.hidden, batch.targets, mask)
        parts = {"expression": expression}
        loss = expression
        if self.cell_head is not None:
            cell = self.cell_loss_sum(batch, out.hidden, out.layout)
            parts["cell"] = cell
            loss = expression + self.config.cell_loss_weight * cell
        return PretrainOutput(loss, mask.sum(), parts)

    def cell_loss_sum(self, batch: CellBatch, hidden: torch.Tensor, layout: SeqLayout,
                      cells: torch.Tensor | None = None) -> torch.Tensor:
        """The cell objective summed over the masked tokens of a masked batch.

        Parameters
        ----------
        batch
            The masked batch the encoder ran on.
        hidden, layout
            The encoder's output for it.
        cells
            ``[B, d]`` cell embeddings to use instead of pooling ``hidden`` (analysis and tests).
        """
        if cells is None:
            cells = self.encoder.pool(hidden, layout)
        n_tokens = batch.gene_ids.shape[0]
        cell_of_token = packed_positions(layout.cu_seqlens, n_tokens)[0] if layout.packed else None
        if isinstance(self.cell_head, ProfileHead):
            # per-cell loss weighted by the cell's masked count, so dividing by the step's masked count
            # (as the trainer does) gives each cell the weight masked-expression gives it
            per_cell = self.cell_head.loss_per_cell(cells, batch, cell_of_token)
            n_masked = _masked_per_cell(batch.mask, cell_of_token, cells.shape[0])
            return (per_cell * n_masked).sum()
        gene_ids = batch.gene_ids
        if self.config.value_encoding == "rank":  # masked ids read <mask>: the query is the true gene
            gene_ids = torch.where(batch.mask, batch.targets, gene_ids)
        genes = self.encoder.gene_embedding(gene_ids)
        targets = self.cell_head.targets(batch, layout)
        return self.cell_head.loss_sum(cells, genes, cell_of_token, targets, batch.mask)

    def embed(self, batch: CellBatch, pooling: str | None = None) -> torch.Tensor:
        """Cell embeddings ``[B, d_model]``; see :meth:`CellEncoder.embed`."""
        return self.encoder.embed(batch, pooling)

    def num_parameters(self, embeddings: bool = True) -> int:
        """Parameters of encoder + heads; ``embeddings=False`` leaves out the per-gene tables and outputs."""
        total = sum(p.numel() for p in self.parameters())
        if not embeddings:
            total -= self.encoder.num_parameters() - self.encoder.num_parameters(embeddings=False)
            if self.head.objective == "gene_id":
                total -= self.head.decoder.weight.numel() + self.head.decoder.bias.numel()
            if isinstance(self.cell_head, ProfileHead):  # one output per gene: a gene table too
                total -= self.cell_head.decoder.weight.numel() + self.cell_head.decoder.bias.numel()
        return total


def _masked_per_cell(mask: torch.Tensor, cell_of_token: torch.Tensor | None, n_cells: int) -> torch.Tensor:
    """float32 ``[B]``: the number of masked tokens of each cell."""
    if cell_of_token is None:
        return mask.sum(1).float()
    return mask.float().new_zeros(n_cells).index_add(0, cell_of_token, mask.float())
