"""Corpus on disk: prepare -> read round trip, splits, shards, atomic writes, damage, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import sigcell.data.corpus as corpus_mod
from conftest import random_counts
from sigcell.cli import main
from sigcell.data import (
    Corpus,
    GeneVocab,
    TokenizerConfig,
    make_dataloader,
    prepare_corpus,
    read_h5ad,
    tokenize,
)


def _files(tmp_path, rng, n=2):
    paths = []
    for k in range(n):
        a = random_counts(
            rng, int(rng.integers(30, 80)), 60, density=float(rng.uniform(0.1, 0.5)), prefix="G"
        )
        a = a[:, rng.permutation(60)[: int(rng.integers(40, 60))]].copy()  # different gene sets / orders
        p = tmp_path / f"in{k}.h5ad"
        a.write_h5ad(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("encoding", ["rank", "binned"])
def test_prepare_round_trip(tmp_path, rng, encoding):
    paths = _files(tmp_path, rng)
    cfg = TokenizerConfig(encoding=encoding, max_genes=int(rng.integers(5, 30)))
    manifest = prepare_corpus(paths, tmp_path / "corpus", config=cfg, shard_tokens=int(rng.integers(50, 400)))
    corpus = Corpus(tmp_path / "corpus", split="all")
    assert len(manifest["shards"]) > 1 and corpus.config == cfg
    vocab = corpus.vocab
    assert (vocab.medians is not None) == (encoding == "rank")
    n = 0
    for k, p in enumerate(paths):  # the corpus holds exactly the in-memory tokens of each file
        ref = tokenize(read_h5ad(p), vocab, cfg)
        for i in range(len(ref)):
            g, v = corpus[n + i]
            np.testing.assert_array_equal(g, ref[i][0])
            np.testing.assert_array_equal(v, ref[i][1])
        src, row = corpus.origin(np.arange(n, n + len(ref)))
        assert (src == k).all() and row.tolist() == ref.cell_index.tolist()
        n += len(ref)
    assert n == len(corpus) == manifest["n_cells"]
    assert manifest["n_tokens"] == int(corpus.n_genes.sum())
    assert manifest["inputs"][0]["length"]["max"] <= cfg.max_genes + 1
    train, val = Corpus(tmp_path / "corpus"), Corpus(tmp_path / "corpus", split="val")
    assert len(train) + len(val) == len(corpus)
    batches = list(make_dataloader(train, batch_size=8, layout="packed"))
    assert (
        sorted(i for b in batches for i in b.cell_index.tolist())
        == corpus.source_index(np.flatnonzero(corpus._cells["split"][:] == 0)).tolist()
    )


def test_splits_are_deterministic_by_cell_id(tmp_path, rng):
    a = random_counts(rng, 400, 30)
    a.write_h5ad(tmp_path / "a.h5ad")
    a[rng.permutation(400)].copy().write_h5ad(tmp_path / "b.h5ad")
    prepare_corpus(
        [tmp_path / "a.h5ad"], tmp_path / "ca", config=TokenizerConfig(encoding="binned"), val_fraction=0.2
    )
    prepare_corpus(
        [tmp_path / "b.h5ad"], tmp_path / "cb", config=TokenizerConfig(encoding="binned"), val_fraction=0.2
    )
    val_a = set(
        Corpus(tmp_path / "ca", split="val").cell_ids(np.arange(len(Corpus(tmp_path / "ca", split="val"))))
    )
    vb = Corpus(tmp_path / "cb", split="val")
    assert val_a == set(vb.cell_ids(np.arange(len(vb))))
    assert 40 <= len(val_a) <= 120  # 20 % of 400, binomial spread


def test_interrupted_prepare_leaves_nothing(tmp_path, rng, monkeypatch):
    paths = _files(tmp_path, rng, 3)
    real = corpus_mod.tokenize
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the middle
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus_mod, "tokenize", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(paths, tmp_path / "out", config=TokenizerConfig(encoding="binned"))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    # a partial directory left by a killed process is refused
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"not a finished sigcell corpus.*interrupted prepare"):
        Corpus(tmp_path / "killed")


def test_existing_output_and_overwrite(tmp_path, rng):
    paths = _files(tmp_path, rng, 1)
    cfg = TokenizerConfig(encoding="binned")
    first = prepare_corpus(paths, tmp_path / "c", config=cfg)
    with pytest.raises(FileExistsError, match="already exists; choose another --out or pass overwrite"):
        prepare_corpus(paths, tmp_path / "c", config=cfg)
    second = prepare_corpus(
        paths, tmp_path / "c", config=TokenizerConfig(encoding="binned", max_genes=3), overwrite=True
    )
    assert second["tokenizer"]["max_genes"] == 3 != first["tokenizer"]["max_genes"]
    assert Corpus(tmp_path / "c").config.max_genes == 3


def test_damaged_corpus(tmp_path, rng):
    paths = _files(tmp_path, rng, 1)
    prepare_corpus(paths, tmp_path / "c", config=TokenizerConfig(encoding="binned"))
    f = tmp_path / "c" / "tokens" / "shard-00000.values.bin"
    f.write_bytes(f.read_bytes()[:-3])
    with pytest.raises(
        ValueError, match=r"shard-00000.values.bin: expected \d+ bytes, got \d+; the corpus is damaged"
    ):
        Corpus(tmp_path / "c")


def test_prepare_with_model_vocab_counts_dropped_genes(tmp_path, rng):
    paths = _files(tmp_path, rng, 1)
    genes = list(read_h5ad(paths[0]).var_names)
    vocab = GeneVocab.from_genes([*genes[:20], "NOT_THERE"])
    m = prepare_corpus(
        paths, tmp_path / "c", config=TokenizerConfig(encoding="binned"), vocab=vocab, drop_empty=True
    )
    assert m["n_dropped_genes"] == len(genes) - 20
    assert Corpus(tmp_path / "c", split="all").vocab == vocab


def test_bad_inputs(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match=r"'nonsense' is neither an existing file nor a dataset name"):
        prepare_corpus(["nonsense"], tmp_path / "c")
    a = random_counts(rng, dense=True)
    a.X[0, :] = 0
    a.write_h5ad(tmp_path / "e.h5ad")
    with pytest.raises(ValueError, match=r"e.h5ad: 1 of 40 cells have no nonzero vocabulary gene"):
        prepare_corpus([tmp_path / "e.h5ad"], tmp_path / "c", config=TokenizerConfig(encoding="binned"))
    assert not (tmp_path / "c").exists()


def test_cli_prepare(tmp_path, rng, capsys):
    paths = _files(tmp_path, rng, 2)
    out = tmp_path / "corpus"
    rc = main(
        [
            "prepare",
            *map(str, paths),
            "--out",
            str(out),
            "--encoding",
            "binned",
            "--max-genes",
            "10",
            "--quiet",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "corpus:" in text and "in0.h5ad" in text and "encoding binned, max_genes 10" in text
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    rc = main(["prepare", str(paths[0]), "--out", str(out), "--quiet"])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    rc = main(["prepare", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 2 and "missing.h5ad: no such file" in capsys.readouterr().err


def test_overwrite_replaces_only_a_sigcell_corpus(tmp_path, rng, capsys):
    paths = _files(tmp_path, rng, 1)
    cfg = TokenizerConfig(encoding="binned")
    # a folder holding a user's file: refused, the file kept, nothing left beside it
    user = tmp_path / "notes"
    user.mkdir()
    (user / "thesis.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"is not a sigcell corpus .* replaces only a corpus that"):
        prepare_corpus(paths, user, config=cfg, overwrite=True)
    assert (user / "thesis.txt").read_text() == "mine"
    # a plain file: refused, left as it was (not renamed)
    plain = tmp_path / "plain.txt"
    plain.write_text("keep")
    with pytest.raises(FileExistsError, match="exists and is not a folder"):
        prepare_corpus(paths, plain, config=cfg, overwrite=True)
    assert plain.read_text() == "keep"
    capsys.readouterr()
    assert main(["prepare", str(paths[0]), "--out", str(user), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a sigcell corpus" in err and (user / "thesis.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # an empty folder and an earlier corpus are replaced
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_corpus(paths, empty, config=cfg, overwrite=True)
    assert Corpus(empty).config.encoding == "binned"
    prepare_corpus(paths, empty, config=cfg, overwrite=True)


def test_a_killed_prepare_leaves_no_partial_folder_behind_the_next_run(tmp_path, rng):
    import subprocess
    import sys

    paths = _files(tmp_path, rng, 1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".c.partial-{dead.pid}"
    stale.mkdir()
    (stale / "vocab.json").write_text("{}")
    alive = tmp_path / f".c.partial-{os.getppid()}"  # a running process's folder is not touched
    alive.mkdir()
    prepare_corpus(paths, tmp_path / "c", config=TokenizerConfig(encoding="binned"))
    assert not stale.exists() and alive.exists()
