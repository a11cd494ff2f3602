"""Stress runs: a tiny real run forced to diverge vs a stable one; results file; lean imports."""

import json
import subprocess
import sys

import pytest

from sigcell.analysis.stress import StressConfig, build_train_config, load_results, run_stress

# A model small enough for a test: 1 layer, 16-token cells, 2 cells per step.
_TINY = {"model.d_model": 16, "model.n_layers": 1, "model.n_heads": 2, "model.d_ff": 32,
         "data.synthetic_min_genes": 15, "data.synthetic_max_genes": 15, "data.batch_size": 2,
         "model.vocab_size": 67, "optim.warmup_steps": 1}


def _run(tmp_path, lr: float, steps: int, seed: int, attentions=("softmax",)):
    cfg = StressConfig(preset="cpu", out_dir=str(tmp_path / "out"), attentions=attentions, seeds=(seed,),
                       overrides={**_TINY, "optim.lr": lr, "steps": steps}, factor=10.0, window=3,
                       progress_every=100)
    lines = []
    return run_stress(cfg, log=lines.append), lines


@pytest.mark.parametrize("seed", [0, 1])
def test_huge_lr_diverges_and_small_lr_does_not(tmp_path, seed):
    results, lines = _run(tmp_path / "hot", lr=1e4, steps=40, seed=seed, attentions=("softmax", "sigmoid"))
    for run in results["runs"]:
        assert run["status"] == "diverged", run["detail"]
        assert run["reason"] in ("nonfinite", "grad_norm")
        assert run["steps"] == run["diverged_step"] < 40  # the run ended at the diverging step
        assert run["series"]["step"][-1] == run["diverged_step"]
    assert any("DIVERGED" in line for line in lines)
    cold, _ = _run(tmp_path / "cold", lr=1e-4, steps=12, seed=seed)
    run = cold["runs"][0]
    assert run["status"] == "stable" and run["steps"] == 12 and run["diverged_step"] is None
    assert run["max_grad_ratio"] < 10


def test_results_file_and_trainer_logs(tmp_path):
    _run(tmp_path, lr=1e4, steps=30, seed=2)
    out = tmp_path / "out"
    data = load_results(out)
    assert data["summary"]["softmax"]["runs"] == 1
    assert data["settings"]["train_config"]["optim"]["clip_grad_norm"] is None
    run = data["runs"][0]
    assert {"loss", "grad_norm", "grad_norm/layer0"} <= set(run["series"])
    assert all(len(v) == len(run["series"]["step"]) for v in run["series"].values())
    lines = (out / run["run_dir"] / "metrics.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds[-1] == "diverged" or "nonfinite" in kinds
    with pytest.raises(FileExistsError, match="already exists"):
        _run(tmp_path, lr=1e4, steps=30, seed=2)


def test_paper_preset_config_is_long_cells_without_qk_norm():
    cfg = build_train_config("paper", "softmax", 0, "/tmp/unused")
    assert cfg.data.synthetic_max_genes + 1 == 8192 and not cfg.model.qk_norm
    assert cfg.optim.clip_grad_norm is None and cfg.precision == "bf16" and cfg.model.d_model == 1024


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"preset": "gpu"}, "unknown preset"),
    ({"attentions": ("relu",)}, "attentions"),
    ({"seeds": (1, 1)}, "seeds"),
    ({"time_budget_s": -5.0}, "time budget"),
    ({"factor": 0.5}, "factor"),
])
def test_bad_stress_settings(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_stress(StressConfig(out_dir=str(tmp_path), **kwargs))


def test_stress_imports_without_plotting_packages():
    # The GPU machine has torch, numpy, safetensors and pyyaml only.
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('matplotlib', 'rich', 'tensorboard', 'anndata', 'scanpy'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import sigcell.analysis.stress, sigcell.cli.analysis\n"
            "from sigcell.analysis.plots import have_matplotlib\n"
            "print(have_matplotlib())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_time_budget_ends_runs_without_divergence(tmp_path):
    cfg = StressConfig(preset="cpu", out_dir=str(tmp_path / "out"), attentions=("softmax", "sigmoid"),
                       seeds=(3,), overrides={**_TINY, "optim.lr": 1e-4, "steps": 500}, factor=10.0, window=3,
                       time_budget_s=1e-3)
    results = run_stress(cfg, log=lambda _: None)
    assert results["settings"]["per_run_budget_s"] == pytest.approx(5e-4)
    for run in results["runs"]:
        # the clock starts after step 1, so each run takes at least 2 steps
        assert run["status"] == "time_budget" and 2 <= run["steps"] < 500 and run["diverged_step"] is None
