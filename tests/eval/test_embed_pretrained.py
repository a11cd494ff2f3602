"""Shipped pretrained models: export a tiny CPU run, load it by name, embed; ``embed --data NAME``; errors."""

from __future__ import annotations

import json
import warnings
import zlib

import numpy as np
import pytest

from sigcell import pretrained
from sigcell.cli import main
from tests.datasets_cache import shared_data_cache

TINY = {"model.n_bins": 7, "model.d_model": 32, "model.n_layers": 2, "model.n_heads": 4, "model.d_ff": 48,
        "data.batch_size": 8, "steps": 4, "val_every": 4, "ckpt_every": 4, "progress": False,
        "tensorboard": False, "device": "cpu", "optim.warmup_steps": 1}


def _counts(n_cells: int, genes: list[str], seed: int):
    from sigcell.datasets import synthetic

    a = synthetic(n_cells, len(genes), n_types=3, median_genes=25, min_genes=8, seed=seed)
    a.var_names = genes
    a.obs["cell_type"] = a.obs["cell_type"].astype(str)
    return a


def _train(corpus_dir, out_dir):
    from sigcell.data import Corpus
    from sigcell.train import TrainConfig, pretrain

    corpus = Corpus(corpus_dir)
    cfg = TrainConfig.from_preset("tiny", {**TINY, "model.vocab_size": len(corpus.vocab),
                                           "data.corpus": str(corpus_dir), "out_dir": str(out_dir)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrain(cfg)
    return out_dir


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 4-step run on a corpus of symbol genes G0..G79 (binned, full length)."""
    from sigcell.data import TokenizerConfig, prepare_corpus

    root = tmp_path_factory.mktemp("pretrained")
    _counts(160, [f"G{j}" for j in range(80)], seed=3).write_h5ad(root / "train.h5ad")
    config = TokenizerConfig(encoding="binned", n_bins=7)
    prepare_corpus([root / "train.h5ad"], root / "corpus", config=config)
    return _train(root / "corpus", root / "run")


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """An empty models folder in place of the package's."""
    monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path / "models"))
    return tmp_path / "models"


def test_export_load_by_name_and_embed(tiny_run, registry, tmp_path):
    from safetensors import safe_open

    from sigcell.eval import embed

    meta = pretrained.export(tiny_run, "tiny-test")
    folder = registry / "tiny-test"
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "meta.json", "model.safetensors",
                                                      "tokenizer.json", "vocab.json"]
    assert meta["total_bytes"] == sum(f.stat().st_size for f in folder.iterdir() if f.name != "meta.json")
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        tensors = [f.get_tensor(k) for k in f.keys()]  # noqa: SIM118 - safe_open is not a dict
    dtypes = {str(t.dtype) for t in tensors if t.is_floating_point()}
    assert dtypes == {"torch.bfloat16"}
    assert "tiny-test" in pretrained.available() and "sigcell-small" in pretrained.available()
    run = pretrained.load("tiny-test")
    assert run.step == 4 and run.vocab.n_genes == meta["vocab_genes"]

    rng = np.random.default_rng(zlib.crc32(b"export_load"))
    genes = [f"G{j}" for j in rng.permutation(80)[:50]] + [f"OTHER{j}" for j in range(10)]
    adata = _counts(40, genes, seed=int(rng.integers(1 << 30)))
    with pytest.warns(UserWarning, match="10 of 60 genes are not in the model's vocabulary"):
        embed(adata, "tiny-test")
    emb = adata.obsm["X_sigcell"]
    params = adata.uns["X_sigcell"]["params"]
    assert emb.shape == (40, 32) and np.isfinite(emb).all()
    assert params["model"] == "tiny-test" and params["n_genes_in_input"] == 60
    assert params["n_genes_used"] == 50 and params["n_genes_unknown"] == 10
    # the shipped bf16 model embeds like the fp32 run, up to bf16 rounding of the weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = embed(adata, str(tiny_run), copy=True).obsm["X_sigcell"]
    cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99

    # the CLI: by name, counts printed, the output file written
    src, dst = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    adata.write_h5ad(src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["embed", "--model", "tiny-test", "--data", str(src), "--out", str(dst)]) == 0
    import anndata as ad

    assert ad.read_h5ad(dst).obsm["X_sigcell"].shape == (40, 32)
    with pytest.raises(FileExistsError, match="already exists"):
        pretrained.export(tiny_run, "tiny-test")
    assert pretrained.export(tiny_run, "tiny-test", overwrite=True)["step"] == 4


def test_cli_prints_known_genes(tiny_run, registry, tmp_path, capsys):
    pretrained.export(tiny_run, "tiny-test")
    src, dst = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    _counts(30, [f"G{j}" for j in range(20)] + ["X1", "X2"], seed=5).write_h5ad(src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["embed", "--model", "tiny-test", "--data", str(src), "--out", str(dst)]) == 0
    err = capsys.readouterr().err
    assert "model tiny-test knows 20 of the 22 genes" in err and "2 unknown genes ignored" in err


def test_ensembl_ids_of_a_user_file_are_mapped(tiny_run, registry, monkeypatch):
    import sigcell.data.genes as genes_mod
    from sigcell.eval import embed

    ens = {f"ENSG{j:011d}": f"G{j}" for j in range(80)}
    monkeypatch.setattr(genes_mod, "_SYMBOLS", ens)  # what gencode_table() would give
    pretrained.export(tiny_run, "tiny-test")
    adata = _counts(30, [f"ENSG{j:011d}.{j % 4 + 1}" for j in range(30)], seed=7)
    out = embed(adata, "tiny-test", copy=True)
    params = out.uns["X_sigcell"]["params"]
    assert params["n_genes_used"] == 30 and params["gene_keys"]["ensembl"] == 30
    assert np.isfinite(out.obsm["X_sigcell"]).all()
    assert adata.var_names[0] == "ENSG00000000000.1"  # the caller's AnnData is not renamed


def test_bad_models_and_files_get_one_clear_error(tiny_run, registry, tmp_path, capsys):
    from sigcell.eval import embed

    pretrained.export(tiny_run, "tiny-test", encoder_only=True)
    run = pretrained.load("tiny-test")
    assert all(np.isnan(p.detach().numpy()).all() for p in run.model.head.parameters())
    adata = _counts(20, [f"G{j}" for j in range(30)], seed=9)
    assert np.isfinite(embed(adata, "tiny-test", copy=True).obsm["X_sigcell"]).all()  # encoder only is enough

    with pytest.raises(ValueError, match=r"unknown pretrained model 'nope'; available: \['sigcell-small', "
                                         r"'tiny-test'\]"):
        embed(adata, "nope")
    with pytest.raises(FileNotFoundError, match="'sigcell-small' is known but its files are not in"):
        embed(adata, "sigcell-small")
    none_known = _counts(20, [f"X{j}" for j in range(30)], seed=9)
    with pytest.raises(ValueError, match=r"none of the 30 genes of the AnnData .* in the model's vocabulary"):
        embed(none_known, "tiny-test")
    src, dst = tmp_path / "none.h5ad", tmp_path / "out.h5ad"
    none_known.write_h5ad(src)
    capsys.readouterr()
    assert main(["embed", "--model", "tiny-test", "--data", str(src), "--out", str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"none of the 30 genes of {src}" in err and not dst.exists()
    assert main(["embed", "--model", "nope", "--data", str(src), "--out", str(dst)]) == 2
    assert "unknown pretrained model 'nope'" in capsys.readouterr().err
    assert main(["embed", "--model", "tiny-test", "--data", "not-a-dataset", "--out", str(dst)]) == 2
    assert "not a registered dataset name" in capsys.readouterr().err
    assert main(["embed", "--model", "tiny-test", "--data", str(src), "--out", str(dst), "--gene-col",
                 "missing"]) == 2
    assert "no var column 'missing'" in capsys.readouterr().err
    assert not dst.exists()


def test_export_list_cli(tiny_run, registry, capsys):
    from sigcell.pretrained.__main__ import main as pmain

    assert pmain(["export", str(tiny_run), "tiny-test", "--root", str(registry)]) == 0
    out = capsys.readouterr().out
    assert "model.safetensors" in out and "MB in all" in out
    assert pmain(["list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-test" in out and "present" in out and "not shipped in this installation" in out
    assert pmain(["export", str(registry), "x"]) == 2  # no checkpoint there
    assert "no checkpoint found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pbmc_run(tmp_path_factory):
    """A 4-step run on the corpus of pbmc68k (held-out cells excluded); skips when PyPI is unreachable."""
    from sigcell.data import TokenizerConfig, prepare_corpus

    cache = shared_data_cache(tmp_path_factory)
    root = tmp_path_factory.mktemp("pbmc")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGCELL_DATA_DIR", str(cache))
    prepare_corpus(["pbmc68k"], root / "corpus", config=TokenizerConfig(encoding="binned", n_bins=7))
    yield _train(root / "corpus", root / "run"), root
    mp.undo()


def test_embed_a_registered_dataset_by_name(pbmc_run, tmp_path, capsys):
    import anndata as ad

    from sigcell.data import Corpus, heldout_cells

    run, root = pbmc_run
    dst = tmp_path / "pbmc.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["embed", "--model", str(run), "--data", "pbmc68k", "--out", str(dst)]) == 0
    assert "of the 765 genes of pbmc68k" in capsys.readouterr().err
    out = ad.read_h5ad(dst)
    assert out.obsm["X_sigcell"].shape == (700, 32)
    assert out.uns["X_sigcell"]["params"]["n_genes_in_input"] == 765
    # the held-out cells recorded in the corpus are those of heldout_cells, and they can be embedded
    held = Corpus(root / "corpus").heldout_cells()["pbmc68k"]
    assert held == heldout_cells("pbmc68k") and np.isfinite(out[held].obsm["X_sigcell"]).all()
    manifest = json.loads((root / "corpus" / "manifest.json").read_text())
    assert manifest["n_cells"] == 700 - len(held)


def test_token_budget_batches_a_corpus_by_tokens(tiny_run, tmp_path):
    from sigcell.data import Corpus
    from sigcell.train import TrainConfig
    from sigcell.train.corpus_data import build_corpus_data
    from sigcell.train.parallel import DistInfo

    corpus_dir = tiny_run.parent / "corpus"
    corpus = Corpus(corpus_dir, split="train")
    budget = int(max(corpus.n_genes)) + 1 + 40
    overrides = {**TINY, "model.vocab_size": len(corpus.vocab), "data.corpus": str(corpus_dir),
                 "out_dir": str(tmp_path / "run"), "data.token_budget": budget, "data.layout": "packed"}
    cfg = TrainConfig.from_preset("tiny", overrides)
    data = build_corpus_data(cfg, DistInfo())
    sizes = set()
    for _ in range(12):
        batch = next(data.train)
        total = int(batch.cu_seqlens[-1])
        assert total <= budget
        sizes.add(int(batch.cu_seqlens.numel()) - 1)
    assert len(sizes) > 1  # cells per batch follow their lengths
    too_small = {**overrides, "data.token_budget": 2}
    with pytest.raises(ValueError, match=r"data\.token_budget.*longest cell"):
        build_corpus_data(TrainConfig.from_preset("tiny", too_small), DistInfo())
    with pytest.raises(ValueError, match="corpus training"):
        TrainConfig.from_preset("tiny", {"data.token_budget": 512})


def test_max_genes_that_differs_from_the_corpus_is_an_error_not_ignored(tiny_run, tmp_path):
    from dataclasses import replace
    from types import SimpleNamespace

    from sigcell.data import Corpus
    from sigcell.train import TrainConfig
    from sigcell.train.corpus_data import build_corpus_data, check_corpus_matches
    from sigcell.train.parallel import DistInfo

    corpus_dir = tiny_run.parent / "corpus"
    corpus = Corpus(corpus_dir)
    overrides = {**TINY, "model.vocab_size": len(corpus.vocab), "data.corpus": str(corpus_dir),
                 "out_dir": str(tmp_path / "run")}
    other = 3 if corpus.config.max_genes != 3 else 4
    with pytest.raises(ValueError, match=rf"data\.max_genes \({other}\) differs from the corpus.*"
                                         rf"--max-genes {other}"):
        build_corpus_data(TrainConfig.from_preset("tiny", {**overrides, "data.max_genes": other}), DistInfo())
    assert not (tmp_path / "run").exists()
    # a corpus prepared with a cap: that same cap is accepted (compare records it so), another is not
    capped = SimpleNamespace(config=replace(corpus.config, max_genes=8), vocab=corpus.vocab)
    check_corpus_matches(TrainConfig.from_preset("tiny", {**overrides, "data.max_genes": 8}), capped)
    with pytest.raises(ValueError, match=r"prepared with at most 8 genes per cell"):
        check_corpus_matches(TrainConfig.from_preset("tiny", {**overrides, "data.max_genes": 9}), capped)


def test_the_shipped_sigcell_small_loads_by_name_and_embeds_symbol_genes(monkeypatch):
    """The model inside the package (no $SIGCELL_PRETRAINED_DIR): intact files, bf16, <= 30 MB, embeds."""
    import hashlib

    from sigcell.eval import embed

    monkeypatch.delenv(pretrained.ENV_VAR, raising=False)
    folder = pretrained.model_dir("sigcell-small")
    meta = json.loads((folder / "meta.json").read_text())
    for name, info in meta["files"].items():
        data = (folder / name).read_bytes()
        assert len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"], name
    assert meta["total_bytes"] <= 30 * 2**20 and meta["dtype"] == "bfloat16"
    run = pretrained.load("sigcell-small")
    assert run.config.model.attention == "sigmoid" and run.config.model.cell_objective == "profile"
    assert run.vocab.n_genes > 10_000
    rng = np.random.default_rng(zlib.crc32(b"shipped"))
    known = [run.vocab.genes[i] for i in rng.permutation(run.vocab.n_genes)[:120]]
    adata = _counts(24, [*known, "NOT_A_GENE_1", "NOT_A_GENE_2"], seed=11)
    with pytest.warns(UserWarning, match="2 of 122 genes are not in the model's vocabulary"):
        embed(adata, "sigcell-small")
    emb = adata.obsm["X_sigcell"]
    assert emb.shape == (24, 256) and np.isfinite(emb).all()
    assert adata.uns["X_sigcell"]["params"]["n_genes_used"] == 120
    assert float(np.linalg.norm(emb - emb.mean(0), axis=1).mean()) > 0  # cells differ


def test_damaged_weights_nan_embeddings_and_all_zero_cells_get_one_clear_error(
        tiny_run, registry, tmp_path, capsys):
    import scipy.sparse as sp
    import torch
    from safetensors.torch import load_file, save_file

    from sigcell.eval import embed

    pretrained.export(tiny_run, "tiny-test")
    adata = _counts(20, [f"G{j}" for j in range(30)], seed=13)
    src, dst = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    adata.write_h5ad(src)

    # a model whose weights turned NaN in memory: the embeddings are refused, not written
    run = pretrained.load("tiny-test")
    with torch.no_grad():
        run.model.encoder.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite \(NaN / inf\) embeddings for 20 of 20 cells"):
        embed(adata, run, copy=True)
    assert "X_sigcell" not in adata.obsm

    # a damaged weights file: refused at load, by the API and the CLI (exit 2, one line, no output)
    weights_path = registry / "tiny-test" / "model.safetensors"
    weights = load_file(str(weights_path))
    name = next(k for k in weights if k.startswith("encoder.") and weights[k].is_floating_point())
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(weights_path))
    want = rf"non-finite \(NaN / inf\) weights in 1 tensor\(s\) \(e.g. {name}\)"
    with pytest.raises(ValueError, match=want):
        pretrained.load("tiny-test")
    capsys.readouterr()
    assert main(["embed", "--model", "tiny-test", "--data", str(src), "--out", str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the file is damaged" in err and not dst.exists()

    # every cell all-zero: nothing to embed is an error, not a matrix of NaN
    pretrained.export(tiny_run, "tiny-test", overwrite=True)
    zeros = adata.copy()
    zeros.X = sp.csr_matrix(zeros.shape, dtype=np.float32)
    with pytest.raises(ValueError, match=r"none of the 20 cells of .* expresses any of the 30 known genes"):
        embed(zeros, "tiny-test", copy=True)
    zeros.write_h5ad(src)
    capsys.readouterr()
    assert main(["embed", "--model", "tiny-test", "--data", str(src), "--out", str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expresses any of the 30 known genes" in err and not dst.exists()


def _one_error_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_damaged_files_bad_paths_and_devices_get_one_line_and_exit_2(tiny_run, registry, tmp_path, capsys):
    import shutil

    import torch

    good = tmp_path / "in.h5ad"
    _counts(20, [f"G{j}" for j in range(30)], seed=21).write_h5ad(good)
    truncated = tmp_path / "truncated.h5ad"
    truncated.write_bytes(good.read_bytes()[:500])
    text = tmp_path / "text.h5ad"
    text.write_text("cell,gene\n")
    for bad in (truncated, text):
        err = _one_error_line(capsys, ["embed", "--model", str(tiny_run), "--data", str(bad),
                                       "--out", str(tmp_path / "o.h5ad")])
        assert "sigcell embed: error:" in err and not (tmp_path / "o.h5ad").exists()
    # --out is a folder / lies under a file
    err = _one_error_line(capsys, ["embed", "--model", str(tiny_run), "--data", str(good),
                                   "--out", str(tmp_path)])
    assert "sigcell embed: error:" in err
    err = _one_error_line(capsys, ["embed", "--model", str(tiny_run), "--data", str(good),
                                   "--out", str(good / "x.h5ad")])
    assert "sigcell embed: error:" in err
    # a damaged run: truncated weights, a state.pt that is not a pickle (its advice is never shown)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = next((run / "checkpoints").glob("step_*"))
    (ckpt / "state.pt").write_bytes(b"garbage")
    err = _one_error_line(capsys, ["embed", "--model", str(run), "--data", str(good),
                                   "--out", str(tmp_path / "o.h5ad")])
    assert "state.pt is damaged (UnpicklingError)" in err and "weights_only" not in err
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 10)
    err = _one_error_line(capsys, ["embed", "--model", str(run), "--data", str(good),
                                   "--out", str(tmp_path / "o.h5ad")])
    assert "model.safetensors is damaged" in err
    # a shipped-model folder with a damaged weights file
    pretrained.export(tiny_run, "tiny-test")
    (registry / "tiny-test" / "model.safetensors").write_bytes(b"\x01" * 16)
    err = _one_error_line(capsys, ["embed", "--model", "tiny-test", "--data", str(good),
                                   "--out", str(tmp_path / "o.h5ad")])
    assert "cannot be read" in err and "reinstall sigcell or re-export" in err
    # a config file that is not YAML
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {d_model: [1, 2\n")
    err = _one_error_line(capsys, ["pretrain", "--config", str(bad_yaml), "--out", str(tmp_path / "r"),
                                   "--dry-run"])
    assert "is not valid YAML" in err
    if not torch.cuda.is_available():
        err = _one_error_line(capsys, ["embed", "--model", str(tiny_run), "--data", str(good),
                                       "--out", str(tmp_path / "o.h5ad"), "--device", "cuda"])
        assert "torch sees no CUDA GPU" in err
    assert not (tmp_path / "o.h5ad").exists()
