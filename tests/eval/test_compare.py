"""``sigcell compare`` end to end on a tiny synthetic dataset: report, resume, embed, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from sigcell.cli import main
from sigcell.eval.metrics import METRICS

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_has_every_metric_model_and_figure(tiny_compare):
    out = tiny_compare["out"]
    report = out / "report"
    md = (report / "README.md").read_text()
    html = (report / "index.html").read_text()
    for info in METRICS:
        assert info.name in md and info.name in html
    for word in ("softmax", "sigmoid", "PCA", "Δ sigmoid vs softmax", "scib-metrics",
                 "± standard deviation over seeds"):
        assert word in md
    images = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert {"umap_toy.png", "val_loss.png", "step_time.png", "differences.png"} <= set(images)
    for name in images:
        assert (report / name).read_bytes()[:8] == PNG
        assert f'src="{name}"' in html
    from matplotlib.image import imread

    height, width = imread(report / "umap_toy.png").shape[:2]
    assert width >= 3 * 400 and height >= 400  # PCA, softmax, sigmoid panels readable at 100 % zoom
    saved = json.loads((report / "summary.json").read_text())
    summary = saved["summary"]["toy"]
    for info in METRICS:
        s = summary[info.key]
        assert set(s["softmax"]["values"]) == {"0", "1"} and s["n_pairs"] == 2
        assert s["verdict"] in ("sigmoid better", "softmax better", "no clear difference", "not learned")
        lo, hi = s["interval"]
        assert lo <= s["difference"] <= hi
        if info.kind != "loss":  # the untrained control of both attentions, scored like the trained ones
            assert set(s["init"]) == {"softmax", "sigmoid"} and isinstance(s["learned"], bool)
            if not s["learned"]:
                assert s["verdict"] == "not learned"
    assert summary["asw"]["pca"] is not None and summary["val_loss"]["pca"] is None
    # The paper is named and each of its claims gets a verdict (a CPU run cannot test the speed claim).
    assert "2604.27124" in saved["paper"] and "2604.27124" in md
    verdicts = {c["claim"].split(" (")[0]: c["verdict"] for c in saved["claims"]}
    assert len(verdicts) == 4
    assert set(verdicts.values()) <= {"supported", "not supported", "not testable here"}
    assert verdicts["sigmoid attention trains faster"] == "not testable here"
    for run in (out / "runs" / "toy").glob("*-seed*"):
        assert np.isfinite(np.load(run / "embedding_init.npy")).all()


def test_pairs_share_config_except_attention(tiny_compare):
    runs = tiny_compare["out"] / "runs" / "toy"
    for seed in (0, 1):
        soft = json.loads((runs / f"softmax-seed{seed}" / "result.json").read_text())
        sig = json.loads((runs / f"sigmoid-seed{seed}" / "result.json").read_text())
        a, b = soft["config"], sig["config"]
        assert a["model"].pop("attention") == "softmax" and b["model"].pop("attention") == "sigmoid"
        a.pop("out_dir"), b.pop("out_dir")
        assert a == b and a["seed"] == seed and a["steps"] == 6
        assert soft["status"] == sig["status"] == "completed"
        emb = np.load(runs / f"softmax-seed{seed}" / "embedding.npy")
        assert emb.shape == (soft["n_heldout"], a["model"]["d_model"]) and np.isfinite(emb).all()


def test_rerun_reuses_finished_runs_and_resumes_a_crashed_one(tiny_compare, tmp_path):
    from sigcell.eval import compare

    out = tmp_path / "out"
    shutil.copytree(tiny_compare["out"], out)
    runs = out / "runs" / "toy"
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/result.json")}
    # Simulate a crash after the last checkpoint: the result was never written.
    crashed = runs / "sigmoid-seed1" / "result.json"
    crashed.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compare([str(tiny_compare["h5ad"])], out=out, stage="train", progress=False, seeds=[0, 1])
    for path, stamp in stamps.items():
        if path != crashed:
            assert path.stat().st_mtime_ns == stamp, f"{path} was redone"
    redone = json.loads(crashed.read_text())
    assert redone["resumed"] is True and redone["status"] == "completed"
    with pytest.raises(ValueError, match="holds runs of 6 steps"):
        compare(out=out, stage="train", steps=7, progress=False)


def test_embed_round_trips_an_h5ad(tiny_compare, tmp_path, capsys):
    import anndata as ad

    src = tmp_path / "in.h5ad"
    adata = ad.read_h5ad(tiny_compare["h5ad"])
    adata.obsm["X_other"] = np.arange(adata.n_obs * 2, dtype=np.float32).reshape(-1, 2)
    adata.uns["note"] = "keep me"
    adata.write_h5ad(src)
    run = tiny_compare["out"] / "runs" / "toy" / "sigmoid-seed0"
    dst = tmp_path / "out.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["embed", "--model", str(run), "--data", str(src), "--out", str(dst)]) == 0
    back = ad.read_h5ad(dst)
    assert back.obsm["X_sigcell"].shape == (adata.n_obs, 64) and np.isfinite(back.obsm["X_sigcell"]).all()
    np.testing.assert_array_equal(back.obsm["X_other"], adata.obsm["X_other"])
    assert back.uns["note"] == "keep me" and list(back.obs_names) == list(adata.obs_names)
    params = back.uns["X_sigcell"]["params"]
    vocab = json.loads((tiny_compare["out"] / "prepared" / "toy" / "vocab.json").read_text())
    n_vocab = len(vocab["genes"])  # genes expressed in the training cells
    assert params["attention"] == "sigmoid" and params["n_genes_used"] == n_vocab
    assert params["n_genes_unknown"] == adata.n_vars - n_vocab
    # The embedding of held-out cells equals what the train stage wrote for them.
    labels_path = tiny_compare["out"] / "prepared" / "toy" / "labels.json"
    held = json.loads(labels_path.read_text())
    emb = np.load(run / "embedding.npy")
    assert emb.shape[0] == len(held)
    assert main(["embed", "--model", str(run), "--data", str(src), "--out", str(dst)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    # evaluate reads it back
    assert main(["evaluate", str(dst), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n_cells"] == adata.n_obs and 0 <= scores["asw"] <= 1


def test_embed_api_matches_train_stage_embedding(tiny_compare):
    import anndata as ad

    from sigcell.eval import embed
    from sigcell.eval.runner import PreparedDataset

    run = tiny_compare["out"] / "runs" / "toy" / "softmax-seed1"
    prepared = PreparedDataset.load(tiny_compare["out"] / "prepared" / "toy")
    adata = ad.read_h5ad(tiny_compare["h5ad"])
    # Held-out cells are tokenized cells; with no empty cells, token rows are AnnData rows.
    assert prepared.meta["n_tokenized"] == adata.n_obs
    held = adata[prepared.heldout].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = embed(held, str(run), copy=True)
    assert "X_sigcell" not in held.obsm  # copy=True leaves the input alone
    np.testing.assert_allclose(out.obsm["X_sigcell"], np.load(run / "embedding.npy"), atol=1e-5)


def test_embed_warns_about_unknown_genes_and_fills_empty_cells(tiny_compare):
    import anndata as ad

    from sigcell.eval import embed

    adata = ad.read_h5ad(tiny_compare["h5ad"])[:20].copy()
    names = list(adata.var_names)
    names[0] = "NOT_A_GENE"
    adata.var_names = names
    x = adata.X.toarray()
    x[3] = 0
    x[3, 0] = 5  # cell 3 expresses only the unknown gene
    adata.X = x
    run = tiny_compare["out"] / "runs" / "toy" / "softmax-seed0"
    vocab = json.loads((tiny_compare["out"] / "prepared" / "toy" / "vocab.json").read_text())
    n_unknown = 150 - len(vocab["genes"]) + 1  # + the renamed gene
    with pytest.warns(UserWarning, match=f"{n_unknown} of 150 genes are not in the model's vocabulary"):
        embed(adata, str(run))
    emb = adata.obsm["X_sigcell"]
    assert np.isnan(emb[3]).all() and np.isfinite(np.delete(emb, 3, axis=0)).all()
    assert adata.uns["X_sigcell"]["params"]["n_cells_without_known_genes"] == 1
    with pytest.raises(TypeError, match="must be an AnnData"):
        embed(x, str(run))
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        embed(adata, str(tiny_compare["out"]))


@pytest.mark.parametrize(("argv", "message"), [
    (["compare", "--stage", "report", "--out", "{tmp}/nothing"], "no prepared inputs"),
    (["compare", "--stage", "train", "--out", "{tmp}/nothing"], "no prepared inputs"),
    (["compare", "--seeds", "0,x", "--out", "{tmp}/o"], "--seeds expects comma-separated integers"),
    (["compare", "not-a-dataset", "--out", "{tmp}/o"], "neither a registered dataset"),
    (["compare", "{tmp}/missing.h5ad", "--out", "{tmp}/o"], "no such .h5ad file"),
    (["compare", "celltypist-sample", "--out", "{tmp}/o"], "has no cell-type labels"),
    (["compare", "--set", "nonsense", "--out", "{tmp}/o", "--stage", "train"], "--set expects KEY=VALUE"),
    (["evaluate", "{tmp}/missing.h5ad"], "no such file"),
])
def test_cli_errors_say_what_to_do(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no folder is left behind (issue 23 item 6)


def test_missing_label_column_and_unfinished_runs(tiny_compare, tmp_path, capsys):
    assert main(["compare", str(tiny_compare["h5ad"]), "--label-col", "nope", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2
    assert "no label column 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # the folders compare made for the failed run are gone
    mine = tmp_path / "mine"
    mine.mkdir()
    assert main(["compare", str(tiny_compare["h5ad"]), "--label-col", "nope", "--out", str(mine),
                 "--quiet"]) == 2
    assert mine.is_dir() and list(mine.iterdir()) == []  # a folder the user made stays
    out = tmp_path / "partial"
    shutil.copytree(tiny_compare["out"], out)
    (out / "runs" / "toy" / "softmax-seed0" / "result.json").unlink()
    assert main(["compare", "--stage", "report", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "1 run(s) are not finished" in err and "--stage train" in err


POISONED = ["anndata", "scanpy", "h5py", "rich", "tensorboard", "matplotlib", "sklearn", "scib_metrics",
            "umap", "pandas", "jax", "pynndescent", "numba"]


def test_train_stage_needs_no_heavy_packages(tiny_compare, tmp_path):
    """The GPU machine has torch + numpy (+ safetensors, pyyaml, scipy via jax) but no anndata & co."""
    prepared = tmp_path / "carried"
    shutil.copytree(tiny_compare["out"] / "prepared", prepared)
    code = (
        "import sys\n"
        f"for name in {POISONED!r}:\n"
        "    sys.modules[name] = None  # any import of them now raises ImportError\n"
        "from sigcell.cli import main\n"
        f"rc = main(['compare', '--stage', 'train', '--prepared', {str(prepared)!r}, '--out', "
        f"{str(tmp_path / 'gpu-out')!r}, '--steps', '2', '--seeds', '0', '--embedding-dtype', 'float16'])\n"
        "loaded = sorted(n for n in " + repr(POISONED) + " if sys.modules.get(n) is not None)\n"
        "assert not loaded, loaded\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "gpu-out" / "runs" / "toy" / "sigmoid-seed0"
    assert np.load(run / "embedding.npy").dtype == np.float16
    assert json.loads((run / "result.json").read_text())["steps"] == 2


def test_gpu_script_syntax():
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_gpu.sh"
    assert script.is_file()
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_sinks_on_compare_runs_use_the_prepared_heldout_cells(tiny_compare, tmp_path, capsys):
    runs = tiny_compare["out"] / "runs" / "toy"
    prepared = tiny_compare["out"] / "prepared" / "toy"
    n_held = int(np.load(prepared / "tokens.npz")["heldout"].size)
    out = tmp_path / "sinks"
    argv = ["analyze", "sinks", "--run", str(runs / "softmax-seed0"), "--run", str(runs / "sigmoid-seed0"),
            "--prepared", str(prepared), "--cells", "7", "--batch-size", "3", "--out", str(out), "--no-plot"]
    assert main(argv) == 0
    result = json.loads((out / "sinks.json").read_text())
    assert [m["attention"] for m in result["models"]] == ["softmax", "sigmoid"]
    assert all(m["cells"] == min(9, n_held) for m in result["models"])  # 3 batches of 3 cover 7 cells
    assert "prepared dataset toy" in capsys.readouterr().out
    assert main(["analyze", "sinks", "--run", str(runs / "softmax-seed0"), "--prepared", str(tmp_path),
                 "--out", str(tmp_path / "bad1")]) != 0
    assert "not a prepared dataset" in capsys.readouterr().err
    assert not (tmp_path / "bad1").exists()  # nothing half-written
    assert main(["analyze", "sinks", "--run", str(runs / "softmax-seed0"), "--batch-size", "0",
                 "--out", str(tmp_path / "bad2")]) != 0
    assert "batch_size" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["evaluate"], ["embed", "--model", "sigcell-small", "--out", "{out}",
                                                    "--data"]])
def test_a_file_that_is_not_h5ad_is_one_clear_error(command, tmp_path, capsys):
    bad = tmp_path / "cells.h5ad"
    bad.write_text("gene,count\nCD3E,4\n")
    argv = [a.replace("{out}", str(tmp_path / "out.h5ad")) for a in command] + [str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}: cannot be read as .h5ad" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.h5ad"]
