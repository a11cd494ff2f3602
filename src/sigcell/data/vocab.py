"""Gene vocabulary: gene identifiers <-> token ids, special tokens, per-gene corpus medians.

Token ids ``0, 1, 2`` are reserved for ``<pad>``, ``<cls>`` and ``<mask>``; genes start at
``FIRST_GENE_ID = 3``. The vocabulary is built from the pretraining corpus and saved as JSON next to
the model (``GeneVocab.save`` / ``GeneVocab.load``); at embed time genes the model does not know
are counted, reported and dropped (``GeneVocab.match``).

The vocabulary also carries each gene's nonzero median of ``counts / total x 1e4`` over the corpus,
which the rank-value encoding divides by (Geneformer style). Binned-only vocabularies have none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CLS_ID",
    "FIRST_GENE_ID",
    "MASK_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "GeneVocab",
    "VocabMatch",
]

PAD_ID = 0
CLS_ID = 1
MASK_ID = 2
FIRST_GENE_ID = 3
SPECIAL_TOKENS: dict[str, int] = {"<pad>": PAD_ID, "<cls>": CLS_ID, "<mask>": MASK_ID}

_FORMAT = "sigcell-gene-vocab"
_VERSION = 1


@dataclass(frozen=True)
class VocabMatch:
    """How a list of gene identifiers maps onto a vocabulary.

    Attributes
    ----------
    ids : np.ndarray
        int64 ``[n_genes]``: token id of each gene, ``-1`` where the vocabulary lacks it.
    n_unknown : int
        Number of genes the vocabulary lacks.
    unknown_examples : tuple[str, ...]
        Up to 10 of the unknown identifiers, for messages.
    """

    ids: np.ndarray
    n_unknown: int
    unknown_examples: tuple[str, ...]

    @property
    def known(self) -> np.ndarray:
        """bool ``[n_genes]``: True where the gene is in the vocabulary."""
        return self.ids >= 0

    @property
    def n_known(self) -> int:
        """Number of genes found in the vocabulary."""
        return int(self.ids.size - self.n_unknown)


class GeneVocab:
    """An ordered set of gene identifiers with reserved special tokens.

    Parameters
    ----------
    genes
        Gene identifiers (symbols or Ensembl ids), unique, in token order: ``genes[i]`` gets id
        ``FIRST_GENE_ID + i``.
    medians
        Optional float ``[n_genes]``: each gene's nonzero median of ``counts / total x 1e4`` over
        the corpus (needed by the rank-value encoding); finite and > 0.
    gene_id_kind
        What the identifiers are (``"symbol"``, ``"ensembl"``, or a dataset-local scheme), recorded
        so a model can refuse data keyed differently.
    """

    def __init__(
        self,
        genes: Sequence[str],
        medians: Sequence[float] | np.ndarray | None = None,
        *,
        gene_id_kind: str = "symbol",
    ) -> None:
        genes = [str(g) for g in genes]
        if not genes:
            msg = "GeneVocab needs at least one gene, got an empty list"
            raise ValueError(msg)
        index = {g: i + FIRST_GENE_ID for i, g in enumerate(genes)}
        if len(index) != len(genes):
            seen: set[str] = set()
            dups = [g for g in genes if g in seen or seen.add(g)]
            msg = (
                f"GeneVocab got {len(genes) - len(index)} duplicate gene ids (e.g. {dups[:5]}); "
                "gene ids must be unique"
            )
            raise ValueError(msg)
        clash = sorted(set(index) & set(SPECIAL_TOKENS))
        if clash:
            msg = f"gene ids {clash} clash with the special tokens {list(SPECIAL_TOKENS)}; rename them"
            raise ValueError(msg)
        if medians is not None:
            medians = np.asarray(medians, dtype=np.float64)
            if medians.shape != (len(genes),):
                msg = f"GeneVocab medians: expected shape ({len(genes)},), got {medians.shape}"
                raise ValueError(msg)
            bad = ~(np.isfinite(medians) & (medians > 0))
            if bad.any():
                msg = (
                    f"GeneVocab medians must be finite and > 0; {int(bad.sum())} are not "
                    f"(e.g. gene {genes[int(np.flatnonzero(bad)[0])]!r})"
                )
                raise ValueError(msg)
        self.genes: tuple[str, ...] = tuple(genes)
        self.medians: np.ndarray | None = medians
        self.gene_id_kind = gene_id_kind
        self._index = index

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_genes(cls, genes: Iterable[str], **kwargs) -> GeneVocab:
        """A vocabulary of the distinct ``genes``, sorted (so it does not depend on input order)."""
        return cls(sorted({str(g) for g in genes}), **kwargs)

    @classmethod
    def from_adata(cls, adata, *, min_cells: int = 1, gene_id_kind: str = "symbol") -> GeneVocab:
        """A vocabulary of the genes of ``adata`` expressed (nonzero) in at least ``min_cells`` cells.

        Medians are not computed here; ``sigcell.data.prepare_corpus`` computes them over the whole
        corpus, ``sigcell.data.gene_medians`` over one AnnData.
        """
        import scipy.sparse as sp

        x = adata.X
        n_cells = (x != 0).sum(axis=0) if sp.issparse(x) else np.count_nonzero(x, axis=0)
        n_cells = np.asarray(n_cells).ravel()
        keep = n_cells >= min_cells
        if not keep.any():
            msg = f"no gene is expressed in >= {min_cells} cells of the AnnData ({adata.n_obs} cells)"
            raise ValueError(msg)
        return cls.from_genes(np.asarray(adata.var_names)[keep], gene_id_kind=gene_id_kind)

    def with_medians(self, medians: np.ndarray) -> GeneVocab:
        """A copy of this vocabulary carrying ``medians`` (float ``[n_genes]``)."""
        return GeneVocab(self.genes, medians, gene_id_kind=self.gene_id_kind)

    # -- lookup ---------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Total number of token ids: special tokens plus genes (the embedding table size)."""
        return FIRST_GENE_ID + len(self.genes)

    @property
    def n_genes(self) -> int:
        """Number of genes (excluding special tokens)."""
        return len(self.genes)

    def __contains__(self, gene: object) -> bool:
        return gene in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GeneVocab):
            return NotImplemented
        same_medians = (self.medians is None and other.medians is None) or (
            self.medians is not None
            and other.medians is not None
            and np.array_equal(self.medians, other.medians)
        )
        return self.genes == other.genes and same_medians and self.gene_id_kind == other.gene_id_kind

    __hash__ = None  # mutable-looking container semantics; not meant as a dict key

    def match(self, genes: Iterable[str]) -> VocabMatch:
        """Map gene identifiers to token ids, counting those the vocabulary lacks.

        Shapes
        ------
        genes: ``[n]`` -> ``VocabMatch.ids``: int64 ``[n]`` (``-1`` = unknown).
        """
        names = [str(g) for g in genes]
        ids = np.fromiter((self._index.get(g, -1) for g in names), dtype=np.int64, count=len(names))
        unknown = np.flatnonzero(ids < 0)
        return VocabMatch(ids, int(unknown.size), tuple(names[i] for i in unknown[:10]))

    def encode(self, genes: Iterable[str]) -> np.ndarray:
        """Token ids of ``genes`` (int64 ``[n]``), ``-1`` for genes not in the vocabulary.

        Use ``match`` to also get the count and examples of unknown genes.
        """
        return self.match(genes).ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """Gene identifiers (or special token names) of token ``ids``."""
        specials = {v: k for k, v in SPECIAL_TOKENS.items()}
        out = []
        for i in np.asarray(ids).ravel().tolist():
            if i in specials:
                out.append(specials[i])
            elif FIRST_GENE_ID <= i < len(self):
                out.append(self.genes[i - FIRST_GENE_ID])
            else:
                msg = f"token id {i} is outside this vocabulary (0..{len(self) - 1})"
                raise ValueError(msg)
        return out

    # -- persistence ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-ready description (what ``save`` writes)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "special_tokens": dict(SPECIAL_TOKENS),
            "first_gene_id": FIRST_GENE_ID,
            "gene_id_kind": self.gene_id_kind,
            "genes": list(self.genes),
            "medians": None if self.medians is None else [float(m) for m in self.medians],
        }

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "vocabulary") -> GeneVocab:
        """Inverse of ``to_dict``; checks the format and the special-token layout."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            msg = f"{source}: not a sigcell gene vocabulary (expected format {_FORMAT!r})"
            raise ValueError(msg)
        if data.get("version") != _VERSION:
            msg = f"{source}: vocabulary version {data.get('version')!r}, this sigcell reads {_VERSION}"
            raise ValueError(msg)
        if data.get("special_tokens") != SPECIAL_TOKENS or data.get("first_gene_id") != FIRST_GENE_ID:
            msg = (
                f"{source}: special tokens {data.get('special_tokens')} / first gene id "
                f"{data.get('first_gene_id')}; expected {SPECIAL_TOKENS} / {FIRST_GENE_ID}"
            )
            raise ValueError(msg)
        return cls(data["genes"], data.get("medians"), gene_id_kind=data.get("gene_id_kind", "symbol"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the vocabulary as JSON (to a temporary name, then renamed); returns the path."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict()))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> GeneVocab:
        """Read a vocabulary written by ``save``."""
        path = Path(path)
        if not path.is_file():
            msg = f"{path}: no such vocabulary file; it is written next to a model or corpus as vocab.json"
            raise FileNotFoundError(msg)
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            msg = f"{path}: not valid JSON ({err}); the vocabulary file is damaged"
            raise ValueError(msg) from err
        return cls.from_dict(data, source=str(path))

    def __repr__(self) -> str:
        med = "with medians" if self.medians is not None else "no medians"
        return f"GeneVocab({self.n_genes} genes, {self.gene_id_kind}, {med})"
