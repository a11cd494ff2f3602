"""The cell encoder: gene + value embeddings, pre-norm transformer blocks, final norm, pooling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sigcell.data.batch import CellBatch
from sigcell.model.attention import STAT_NAMES, Attention
from sigcell.model.config import ModelConfig
from sigcell.model.layout import SeqLayout
from sigcell.model.norm import make_norm
from sigcell.model.validate import check_batch
from sigcell.ops.padding import packed_positions

__all__ = ["Block", "CellEncoder", "EncoderOutput", "ValueEncoder"]


class ValueEncoder(nn.Module):
    """Embeds each token's expression value; masked positions get one learned mask vector instead.

    * continuous: ``Linear(1, d) -> GELU -> Linear(d, d)`` of the float value;
    * binned: an embedding per bin (``n_bins``);
    * rank (Geneformer): genes arrive sorted by descending expression score, so a gene's rank is its
      position in the cell; an embedding per position (``max_rank``; later positions share the last
      one). The float scores in ``values`` are not used.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.encoding = config.value_encoding
        d = config.d_model
        if self.encoding == "continuous":
            self.proj = nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
        else:
            size = config.n_bins if self.encoding == "binned" else config.max_rank
            self.table = nn.Embedding(size, d)
        self.mask_embedding = nn.Parameter(torch.zeros(d))
        self.max_index = (config.n_bins if self.encoding == "binned" else config.max_rank) - 1

    def forward(self, values: torch.Tensor, mask: torch.Tensor | None, layout: SeqLayout) -> torch.Tensor:
        if self.encoding == "continuous":
            emb = self.proj(values.unsqueeze(-1).to(self.proj[0].weight.dtype))
        elif self.encoding == "binned":
            emb = self.table(values.clamp(max=self.max_index))
        else:
            emb = self.table(positions(layout, values).clamp(max=self.max_index))
        if mask is not None and self.encoding != "rank":  # rank masking replaces the gene id instead
            emb = torch.where(mask.unsqueeze(-1), self.mask_embedding.to(emb.dtype), emb)
        return emb


class MLP(nn.Module):
    """Two-layer GELU MLP."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.ff_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.ff_dim, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel learned gain on a residual branch (CaiT, Touvron et al. 2021)."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.to(x.dtype)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls(attn(norm(x)))``, then ``x + ls(mlp(norm(x)))``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm1 = make_norm(config.norm, config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.norm2 = make_norm(config.norm, config.d_model, config.norm_eps)
        self.mlp = MLP(config)
        ls = config.layer_scale
        self.ls1 = LayerScale(config.d_model, config.layer_scale_init) if ls else nn.Identity()
        self.ls2 = LayerScale(config.d_model, config.layer_scale_init) if ls else nn.Identity()
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, layout: SeqLayout, key_bias=None, return_weights: bool = False):
        a, weights = self.attn(self.norm1(x), layout, key_bias, return_weights)
        x = x + self.drop(self.ls1(a))
        x = x + self.drop(self.ls2(self.mlp(self.norm2(x))))
        return x, weights


@dataclass
class EncoderOutput:
    """What :meth:`CellEncoder.forward` returns.

    Attributes
    ----------
    hidden
        Final-norm token states, ``[B, L, d_model]`` (padded) or ``[T, d_model]`` (packed).
    layout
        The cell boundaries of ``hidden``.
    attentions
        Per layer ``[B, H, L, L]`` probabilities when requested, else None.
    """

    hidden: torch.Tensor
    layout: SeqLayout
    attentions: list[torch.Tensor] | None = None


class CellEncoder(nn.Module):
    """Transformer encoder of tokenized cells (``<cls>`` + genes), softmax or sigmoid attention.

    Parameters
    ----------
    config
        The architecture; ``config.attention`` selects ``"sigmoid"`` (sigcell op) or ``"softmax"`` (SDPA).

    Examples
    --------
    >>> model = CellEncoder(ModelConfig(vocab_size=103, d_model=32, n_layers=2, n_heads=2))
    >>> hidden = model(batch).hidden          # doctest: +SKIP
    >>> cells = model.embed(batch)            # [B, 32]  doctest: +SKIP
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.gene_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.value_encoder = ValueEncoder(config)
        # One additive key logit per (gene, layer), zero at init so the option starts as a no-op.
        self.gene_key_bias = (nn.Embedding(config.vocab_size, config.n_layers) if config.gene_key_bias
                              else None)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights, zero biases; residual output projections get 1/sqrt(2 n_layers)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
        residual_std = std / (2 * self.config.n_layers) ** 0.5
        for block in self.blocks:
            nn.init.normal_(block.attn.out.weight, std=residual_std)
            nn.init.normal_(block.mlp.fc2.weight, std=residual_std)
        if self.gene_key_bias is not None:
            nn.init.zeros_(self.gene_key_bias.weight)

    # ------------------------------------------------------------------------------------------------
    def forward(self, batch: CellBatch, return_attention: bool = False) -> EncoderOutput:
        """Encode a padded or packed batch.

        Parameters
        ----------
        batch
            A :class:`~sigcell.data.CellBatch`; ``batch.mask`` (if set) marks masked-value positions.
        return_attention
            Run the plain-PyTorch attention and return each layer's probabilities (small inputs only).

        Returns
        -------
        EncoderOutput with ``hidden`` ``[B, L, d]`` (padded) or ``[T, d]`` (packed).
        """
        check_batch(batch, self.config)
        layout = layout_of(batch)
        x = self.gene_embedding(batch.gene_ids) + self.value_encoder(batch.values, batch.mask, layout)
        x = self.drop(x)
        key_bias = self.gene_key_bias(batch.gene_ids).float() if self.gene_key_bias is not None else None
        attentions = [] if return_attention else None
        for i, block in enumerate(self.blocks):
            kb = None if key_bias is None else key_bias[..., i]
            x, weights = block(x, layout, kb, return_attention)
            if return_attention:
                attentions.append(weights)
        return EncoderOutput(self.norm(x), layout, attentions)

    def pool(self, hidden: torch.Tensor, layout: SeqLayout, pooling: str | None = None) -> torch.Tensor:
        """Cell embeddings ``[B, d]`` from token states, by ``<cls>`` or by the mean over the genes.

        ``"mean"`` averages positions ``1 .. len - 1`` (the genes, never ``<cls>`` nor padding); a cell
        with no gene falls back to its ``<cls>`` state. Every shape is static (no boolean indexing, no
        device sync), so the pooling traces under ``torch.compile`` without graph breaks.
        """
        pooling = pooling or self.config.pooling
        if layout.packed:
            starts = layout.cu_seqlens[:-1].to(torch.int64)
            cls = hidden[starts]
        else:
            cls = hidden[:, 0]
        if pooling == "cls":
            return cls
        lengths = layout.lengths().to(device=hidden.device, dtype=torch.int64)
        if layout.packed:
            seq_idx, pos = packed_positions(layout.cu_seqlens, hidden.shape[0])
            weight = (pos > 0).to(torch.float32).unsqueeze(-1)  # genes only: not <cls>
            sums = hidden.new_zeros(lengths.numel(), hidden.shape[-1], dtype=torch.float32)
            sums = sums.index_add(0, seq_idx, hidden.float() * weight)
        else:
            pos = torch.arange(hidden.shape[1], device=hidden.device).view(1, -1)
            is_gene = (pos >= 1) & (pos < lengths.view(-1, 1))
            # where, not a product: whatever the padding rows hold (even non-finite) never reaches the mean
            sums = torch.where(is_gene.unsqueeze(-1), hidden.float(), 0.0).sum(1)
        n_genes = (lengths - 1).clamp(min=0).unsqueeze(-1)
        mean = (sums / n_genes.clamp(min=1)).to(hidden.dtype)
        return torch.where(n_genes > 0, mean, cls)

    def embed(self, batch: CellBatch, pooling: str | None = None) -> torch.Tensor:
        """Cell embeddings.

        Parameters
        ----------
        batch
            A padded or packed :class:`~sigcell.data.CellBatch` (without masking for inference).
        pooling
            ``"cls"`` or ``"mean"``; None uses ``config.pooling``.

        Returns
        -------
        Tensor ``[B, d_model]``.
        """
        if pooling is not None and pooling not in ("cls", "mean"):
            msg = f"CellEncoder.embed: pooling must be 'cls' or 'mean', got {pooling!r}"
            raise ValueError(msg)
        out = self(batch)
        return self.pool(out.hidden, out.layout, pooling)

    @torch.no_grad()
    def attention_maps(self, batch: CellBatch) -> list[torch.Tensor]:
        """Per-layer attention probabilities via the plain-PyTorch path (analysis; small inputs).

        Returns
        -------
        List of ``n_layers`` float32 tensors ``[B, H, L, L]`` (query, key), zero outside each cell.
        """
        return self(batch, return_attention=True).attentions

    # ------------------------------------------------------------------------------------------------
    def set_record_stats(self, on: bool) -> None:
        """Turn on / off the recording of attention-logit statistics in every layer."""
        for block in self.blocks:
            block.attn.record_stats = on
            if not on:
                block.attn.last_stats = None

    def attention_stats(self) -> dict[str, float]:
        """The statistics recorded by the last forward, as ``{"layer{i}/{name}": value}``."""
        recorded = [(i, b.attn.last_stats) for i, b in enumerate(self.blocks)
                    if b.attn.last_stats is not None]
        if not recorded:
            return {}
        values = torch.stack([s for _, s in recorded]).cpu().tolist()
        return {f"layer{i}/{name}": v for (i, _), row in zip(recorded, values, strict=True)
                for name, v in zip(STAT_NAMES, row, strict=True)}

    def num_parameters(self, embeddings: bool = True) -> int:
        """Number of parameters; ``embeddings=False`` leaves out the per-gene tables."""
        total = sum(p.numel() for p in self.parameters())
        if not embeddings:
            total -= self.gene_embedding.weight.numel()
            if self.gene_key_bias is not None:
                total -= self.gene_key_bias.weight.numel()
        return total


def positions(layout: SeqLayout, like: torch.Tensor) -> torch.Tensor:
    """int64 position of each token inside its cell (0 = ``<cls>``), shaped like the token tensor."""
    if layout.packed:
        return packed_positions(layout.cu_seqlens, like.shape[0])[1]
    return torch.arange(like.shape[1], device=like.device).expand(like.shape[0], -1)


def layout_of(batch: CellBatch) -> SeqLayout:
    """The :class:`SeqLayout` of a batch."""
    if batch.packed:
        max_len = batch.max_seqlen
        if max_len is None:
            max_len = int((batch.cu_seqlens[1:] - batch.cu_seqlens[:-1]).max()) if batch.num_cells else 0
        return SeqLayout(cu_seqlens=batch.cu_seqlens, max_seqlen=int(max_len))
    return SeqLayout(seq_lens=batch.seq_lens)
