"""``sigcell bench train`` on the CPU: cases, batches, providers, ratios / targets, JSON, command line."""

import json

import pytest
import torch

from sigcell.bench.__main__ import main as bench_main
from sigcell.bench.train import (
    TrainBenchConfig,
    _read_flat_yaml,
    load_model_config,
    make_batches,
    ratios,
    run_train_bench,
    targets,
)
from sigcell.bench.train_cases import Mix, TrainCase, build_train_cases, memory_case, mix_lengths, parse_mix
from sigcell.bench.train_providers import TRAIN_PROVIDERS, resolve_train_providers
from sigcell.cli import main as cli_main
from sigcell.model.attention import Attention

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------------------------------
# Cases and batches
# ----------------------------------------------------------------------------------------------------


def test_cases_full_padded_and_mixes():
    cases = build_train_cases((32, 64), (0.0, 0.25), [Mix("scmark", 64, 0.05)], tokens=128, seed=3)
    assert [c.label for c in cases] == ["full L32", "p25 L32", "full L64", "p25 L64", "cells:scmarkx0.05 L64"]
    full, p25 = cases[0], cases[1]
    assert full.lengths == (32,) * 4 and full.is_full and full.padded_tokens == full.valid_tokens == 128
    assert p25.cells == 4 and all(24 <= n <= 32 for n in p25.lengths)
    mix = cases[-1]
    assert mix.valid_tokens <= 128 and max(mix.lengths) <= 64 and not mix.is_full
    assert mix.attention_pairs("packed") == sum(n * n for n in mix.lengths)
    assert mix.attention_pairs("padded") == mix.cells * max(mix.lengths) ** 2
    assert memory_case(16384).lengths == (16385,)


def test_mix_fills_the_token_budget():
    mix = parse_mix("celltypistx2@8192")
    assert (mix.dist, mix.scale, mix.seq_len) == ("celltypist", 2.0, 8192)
    assert mix.spec() == "celltypistx2@8192"
    lengths = mix_lengths(mix, 16384, seed=1)
    assert sum(lengths) <= 16384 and all(2 <= n <= 8192 for n in lengths)
    from sigcell.bench.cell_lengths import sample_cell_lengths

    genes = sample_cell_lengths(len(lengths) + 1, 8191, dist="celltypist", scale=2.0, seed=1)
    one_more = [n + 1 for n in genes]
    assert sum(one_more) > 16384  # the largest stratified batch that fits
    for bad in ("celltypist", "nope@128", "scmarkx@64", "scmark@1"):
        with pytest.raises(ValueError):
            parse_mix(bad)
    with pytest.raises(ValueError, match="token budget"):
        mix_lengths(Mix("scmark", 4096), 1024)


def test_batches_hold_the_same_cells_in_both_layouts():
    model_config = load_model_config("tiny")
    case = TrainCase("mix", 40, (40, 7, 23), "cells:test")
    batches = make_batches(case, model_config, 0.25, seed=5)
    packed, padded = batches["packed"], batches["padded"]
    assert packed.gene_ids.shape == (70,) and padded.gene_ids.shape == (3, 40)
    assert padded.seq_lens.tolist() == [40, 7, 23] and packed.cu_seqlens.tolist() == [0, 40, 47, 70]
    for i, (start, n) in enumerate(((0, 40), (40, 7), (47, 23))):
        for name in ("gene_ids", "values", "mask", "targets"):
            assert torch.equal(getattr(padded, name)[i, :n], getattr(packed, name)[start:start + n]), name
        assert not padded.mask[i, n:].any() and (padded.gene_ids[i, n:] == 0).all()
        assert packed.gene_ids[start] == 1  # <cls>
    assert int(packed.mask.sum()) == int(padded.mask.sum()) > 0


def test_flat_yaml_reader_matches_pyyaml():
    yaml = pytest.importorskip("yaml")
    from sigcell.model import PRESETS, preset_path

    for name in PRESETS:
        path = preset_path(name)
        assert _read_flat_yaml(path) == yaml.safe_load(path.read_text()), name


# ----------------------------------------------------------------------------------------------------
# Providers and skip reasons
# ----------------------------------------------------------------------------------------------------


def test_skip_reasons():
    full = TrainCase("full", 64, (64, 64), "full")
    padded = TrainCase("padded", 64, (64, 50), "p25", 0.25)
    p = TRAIN_PROVIDERS
    assert p["sdpa-flash"].skip_reason(full, "padded") is None
    assert "refuses an attention mask" in p["sdpa-flash"].skip_reason(padded, "padded")
    assert p["sdpa-cudnn"].skip_reason(padded, "padded") is None
    assert "no packed" in p["sdpa-cudnn"].skip_reason(full, "packed")
    assert "no varlen" in p["tritonsigmoid"].skip_reason(full, "packed")
    assert "no padded path" in p["softmax-varlen"].skip_reason(full, "padded")
    assert p["sigcell"].skip_reason(padded, "packed") is None
    cfg = load_model_config("tiny")
    assert "needs a CUDA GPU" in p["sdpa-cudnn"].unavailable(CPU, "fp32", cfg)
    assert "CUDA only" in p["softmax-varlen"].unavailable(CPU, "fp32", cfg)
    assert "CUDA GPU" in p["tritonsigmoid"].unavailable(CPU, "fp32", cfg)
    assert p["sdpa-math"].unavailable(CPU, "fp32", cfg) is None
    names = [x.name for x in resolve_train_providers(["default"], torch.device("cuda"), ["tritonsigmoid"])]
    assert names == ["sigcell", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "softmax-varlen"]
    assert [x.name for x in resolve_train_providers(["softmax"], CPU, ["sdpa"])] == ["softmax-varlen"]
    with pytest.raises(ValueError, match="unknown provider 'sdpa-fast'"):
        resolve_train_providers(["sdpa-fast"], CPU)
    with pytest.raises(ValueError, match="no provider left"):
        resolve_train_providers(["sigcell"], CPU, ["sigmoid"])


def test_sdpa_patch_drops_the_mask_only_on_full_batches_and_restores_the_model():
    original = Attention.__dict__["_sdpa_padded"]
    model_config = load_model_config("tiny", {"n_layers": 1}, "softmax")
    torch.manual_seed(0)
    attn = Attention(model_config)
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 8, 4, 16, generator=gen) for _ in range(3))
    lens = torch.tensor([8, 8], dtype=torch.int32)
    full = TrainCase("full", 8, (8, 8), "full")
    with TRAIN_PROVIDERS["sdpa-math"].patch(full, "padded"):
        assert Attention.__dict__["_sdpa_padded"] is not original
        out = attn._sdpa_padded(q, k, v, lens, None)
    assert Attention.__dict__["_sdpa_padded"] is original
    torch.testing.assert_close(out, original(attn, q, k, v, lens, None))


# ----------------------------------------------------------------------------------------------------
# Ratios and targets
# ----------------------------------------------------------------------------------------------------


def _rec(case, kind, seq, provider, layout, ms, tokens=16384, attention=None):
    attention = attention or ("softmax" if provider.startswith(("sdpa", "softmax")) else "sigmoid")
    return {"case": case, "kind": kind, "L": seq, "B": 8, "provider": provider, "attention": attention,
            "layout": layout, "ms": ms, "tokens_per_s": tokens / (ms * 1e-3)}


def test_ratios_and_targets():
    results = [
        _rec("full L2048", "full", 2048, "sigcell", "padded", 27.0),
        _rec("full L2048", "full", 2048, "sigcell", "packed", 26.0),
        _rec("full L2048", "full", 2048, "sdpa-cudnn", "padded", 28.3),
        _rec("full L2048", "full", 2048, "sdpa-flash", "padded", 28.9),
        _rec("full L2048", "full", 2048, "tritonsigmoid", "padded", 43.6),
        _rec("full L8192", "full", 8192, "sigcell", "padded", 40.0),
        _rec("full L8192", "full", 8192, "sdpa-cudnn", "padded", 43.2),
        _rec("mix", "mix", 4096, "sigcell", "padded", 50.0, 14000),
        _rec("mix", "mix", 4096, "sigcell", "packed", 30.0, 14000),
        _rec("mix", "mix", 4096, "sdpa-cudnn", "padded", 45.0, 14000),
        _rec("mix", "mix", 4096, "softmax-varlen", "packed", 25.0, 14000),
    ]
    rows = {r["case"]: r for r in ratios(results)}
    r2k = rows["full L2048"]
    assert r2k["sigcell"] == "sigcell/packed" and r2k["best_softmax"] == "sdpa-cudnn/padded"
    assert r2k["x_best_softmax"] == pytest.approx(26.0 / 28.3, rel=1e-3)
    assert r2k["x_tritonsigmoid"] == pytest.approx(27.0 / 43.6, rel=1e-3)  # same layout: padded
    assert rows["full L8192"]["x_best_softmax"] == pytest.approx(40.0 / 43.2, rel=1e-3)
    mix = rows["mix"]
    assert mix["best_softmax"] == "softmax-varlen/packed" and mix["masked_softmax"] == "sdpa-cudnn/padded"
    assert mix["packed_gain_vs_masked_softmax"] == pytest.approx(1.5, rel=1e-3)
    assert mix["packed_gain_vs_padded_sigcell"] == pytest.approx(50 / 30, rel=1e-3)
    assert mix["x_peers"]["softmax-varlen/packed"] == pytest.approx(1.2, rel=1e-3)

    memory = [{"provider": "sigcell", "case": "memory", "peak_mem_gib": 30.0}]
    status = {(t["target"].split(" (")[0], t["case"]): t["status"]
              for t in targets(list(rows.values()), memory, "base")}
    assert status[("sigmoid step <= 0.95x best softmax", "full L2048")] == "pass"  # 0.919
    assert status[("sigmoid step <= 0.9x best softmax", "full L8192")] == "FAIL"  # 0.926
    assert status[("sigcell step <= 0.75x TritonSigmoid", "full L2048")] == "pass"  # 0.619
    assert status[("packed sigmoid tokens/s >= 1.3x masked softmax", "mix")] == "pass"
    assert status[("packed sigmoid tokens/s >= 1.3x padded sigmoid", "mix")] == "pass"
    assert status[("one 16k-gene cell trains on one 80 GB card", "memory")] == "pass"
    empty = targets([], None, "tiny")
    assert {t["status"] for t in empty} == {"not measured"}


# ----------------------------------------------------------------------------------------------------
# A real (tiny) run on the CPU
# ----------------------------------------------------------------------------------------------------


def test_cpu_run_writes_json(tmp_path, capsys):
    cases = build_train_cases((32,), (0.0,), [Mix("scmark", 64, 0.05)], tokens=64, mix_tokens=96)
    providers = resolve_train_providers(["sigcell", "sdpa-math", "sdpa-flash", "tritonsigmoid"], CPU)
    out = tmp_path / "run.json"
    cfg = TrainBenchConfig(name="t", cases=cases, providers=providers, model="tiny",
                           model_overrides={"n_layers": 1, "d_model": 32, "d_ff": 64}, warmup=0, steps=2,
                           precision="fp32", device="cpu", out=out, plot=False, table=True, argv=["x"])
    data, path = run_train_bench(cfg, log=lambda line: None)
    assert path == out and json.loads(out.read_text()) == data
    assert data["schema"] == "sigcell.bench.train/1" and data["complete"]
    assert "gpu" in data["env"] and data["env"]["device"] == "cpu" and data["config"]["precision"] == "fp32"
    assert data["model"]["preset"] == "tiny" and data["model"]["config"]["n_layers"] == 1
    got = {(r["case"], r["provider"], r["layout"]) for r in data["results"]}
    assert got == {(c.label, p, lay) for c in cases for p, lay in
                   (("sigcell", "padded"), ("sigcell", "packed"), ("sdpa-math", "padded"))}
    for r in data["results"]:
        assert len(r["step_ms"]) == 2 and r["ms"] > 0 and r["peak_mem_gib"] is None
        assert r["tokens_per_s"] == pytest.approx(r["valid_tokens"] / (r["ms"] * 1e-3), rel=1e-3)
        assert r["cells_per_s"] == pytest.approx(r["B"] / (r["ms"] * 1e-3), rel=1e-3)
    by = {(r["case"], r["provider"], r["layout"]): r for r in data["results"]}
    for case in cases:  # the same cells, masks and weights: padded and packed train identically
        padded, packed = by[(case.label, "sigcell", "padded")], by[(case.label, "sigcell", "packed")]
        assert padded["loss"] == pytest.approx(packed["loss"], rel=1e-4)
        assert padded["computed_tokens"] == case.padded_tokens
        assert packed["computed_tokens"] == case.valid_tokens
    reasons = {(s["provider"], s["reason"]) for s in data["skipped"]}
    assert ("tritonsigmoid", "TritonSigmoid needs a CUDA GPU") in reasons
    assert any(p == "sdpa-math" and "no packed" in why for p, why in reasons)
    assert [r["case"] for r in data["ratios"]] == [c.label for c in cases]
    assert {t["status"] for t in data["targets"]} <= {"pass", "FAIL", "not measured"}
    assert Attention.__dict__["_sdpa_padded"].__qualname__ == "Attention._sdpa_padded"  # patch undone
    printed = capsys.readouterr().out
    assert "ms per optimizer step" in printed and "whole-step targets" in printed


def test_cpu_run_compiled_matches_eager_without_graph_breaks(tmp_path, monkeypatch):
    # aot_eager traces like the default backend (dynamo + AOTAutograd) without needing a C++ toolchain.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="aot_eager", **kw))
    cases = build_train_cases((32,), (0.25,), [], tokens=64)
    providers = resolve_train_providers(["sigcell", "sdpa-math"], CPU)
    cfg = TrainBenchConfig(name="t", cases=cases, providers=providers, model="tiny",
                           model_overrides={"n_layers": 2, "d_model": 32, "d_ff": 64}, warmup=1, steps=2,
                           precision="fp32", device="cpu", out=tmp_path / "run.json", plot=False, table=False,
                           compile_modes=("eager", "compiled"))
    data, _ = run_train_bench(cfg, log=lambda line: None)
    by = {(r["provider"], r["layout"], r["compile"]): r for r in data["results"]}
    assert set(by) == {(p, lay, m) for p, lay in (("sigcell", "padded"), ("sigcell", "packed"),
                                                  ("sdpa-math", "padded")) for m in ("eager", "compiled")}
    for (provider, layout, mode), r in by.items():
        assert 0 < r["host_ms"] <= r["ms"] * 1.01 and r["gpu_busy_ms"] is None
        if mode == "eager":
            assert r["graphs"] is None and r["graph_breaks"] is None
            continue
        assert r["graphs"] >= 1 and r["graph_breaks"] == 0, (provider, layout, r["graphs"], r["graph_breaks"])
        # same weights, batch and optimizer steps: the compiled model trains like the eager one
        assert r["loss"] == pytest.approx(by[(provider, layout, "eager")]["loss"], rel=1e-4)
    ratio = data["ratios"][0]
    assert ratio["best_softmax"].startswith("sdpa-math/padded")
    assert set(ratio["x_peers"]) >= {"sdpa-math/padded", "sdpa-math/padded/compiled"}


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["--l", "abc"], ["--padding", "150"], ["--layouts", "diagonal"], ["--mixes", "celltypist"],
     ["--preset", "nope"], ["--set", "n_layers"], ["--precision", "fp8"], ["--steps", "x"]],
)
def test_bad_arguments_exit_with_code_2(argv, capsys):
    for entry in (lambda a: cli_main(["bench", "train", *a]), lambda a: bench_main(["train", *a])):
        with pytest.raises(SystemExit) as exc:
            entry(argv)
        assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--providers", "sdpa-fast"], "unknown provider 'sdpa-fast'"),
     (["--set", "attention=softmax"], "set by each provider"),
     (["--set", "n_layers=0"], "n_layers"),
     (["--set", "no_such_field=1"], "no_such_field"),
     (["--model", "nope"], "unknown preset"),
     (["--steps", "0"], "--steps"),
     (["--batch-tokens", "0"], "--batch-tokens"),
     (["--mixes", "scmark@4096", "--mix-tokens", "100"], "token budget")],
)
def test_bad_values_exit_with_code_2(argv, message, capsys):
    assert cli_main(["bench", "train", "--device", "cpu", "--dry-run", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cuda_without_a_gpu_exits_with_code_2(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert bench_main(["train", "--device", "cuda", "--preset", "tiny"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    code = bench_main(["train", "--preset", "full", "--out", str(tmp_path), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and not list(tmp_path.iterdir())
    assert "model base" in out and "full L8192" in out and "p25 L1024" in out
    assert "cells:celltypistx2 L8192" in out and "memory:16384-genes" in out
    assert "sdpa-flash/padded" in out and "measurements; about" in out
    code = cli_main(["bench", "train", "--preset", "quick", "--l", "4096", "--padding", "0",
                     "--mixes", "none", "--no-memory-check", "--layouts", "packed", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "full L4096" in out and "p25" not in out and "memory" not in out
    assert "sigcell/packed, softmax-varlen/packed" in out and "/padded" not in out


def test_bench_help_lists_train(capsys):
    assert cli_main(["bench"]) == 2
    assert "train" in capsys.readouterr().out
