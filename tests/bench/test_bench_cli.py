"""The ``sigcell bench kernels`` and ``python -m sigcell.bench kernels`` command lines."""

import json
from pathlib import Path

import pytest
import torch

from sigcell.bench.__main__ import main as bench_main
from sigcell.cli import main as cli_main


@pytest.mark.parametrize(
    "argv",
    [
        ["--d", "abc"],
        ["--l", "0"],
        ["--padding", "150"],
        ["--modes", "forward"],
        ["--dtype", "int8"],
        ["--preset", "nope"],
        ["--causal", "maybe"],
    ],
)
def test_bad_arguments_exit_with_code_2(argv, capsys):
    for entry in (lambda a: cli_main(["bench", "kernels", *a]), lambda a: bench_main(["kernels", *a])):
        with pytest.raises(SystemExit) as exc:
            entry(argv)
        assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bad_values_found_after_parsing_exit_with_code_2(capsys):
    assert cli_main(["bench", "kernels", "--providers", "sdpa-fast", "--device", "cpu", "--dry-run"]) == 2
    assert "unknown provider 'sdpa-fast'" in capsys.readouterr().err
    assert bench_main(["kernels", "--cell-dist", "scmark", "--cell-scale", "-1", "--device", "cpu",
                       "--dry-run"]) == 2
    assert "scale > 0" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert bench_main(["kernels", "--device", "cuda", "--preset", "tiny"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_bench_without_subcommand_prints_help(capsys):
    assert cli_main(["bench"]) == 2
    assert "kernels" in capsys.readouterr().out


def test_dry_run_lists_the_plan_and_writes_nothing(tmp_path, capsys):
    code = bench_main(["kernels", "--preset", "paper", "--device", "cpu", "--out", str(tmp_path),
                       "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and not list(tmp_path.iterdir())
    assert "12 cases" in out and "D128 L16384 p25" in out and "measurements" in out


def test_cells_preset_overrides_and_flags(tmp_path, capsys):
    code = bench_main(["kernels", "--preset", "cells", "--d", "64", "--l", "4096", "--device", "cpu",
                       "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "D64 L4096 cells:celltypist" in out and "B=16" in out


def test_cli_runs_end_to_end_on_cpu(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = cli_main(["bench", "kernels", "--preset", "tiny", "--d", "16", "--l", "8", "--padding", "0,50",
                         "--causal", "on", "--modes", "fwd", "--dtype", "fp32", "--device", "cpu",
                         "--providers", "sigcell-padded,torch-sigmoid", "--rep-ms", "1", "--warmup-ms", "0",
                         "--no-plot", "--name", "cli", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0
    (path,) = tmp_path.glob("cli-*.json")
    data = json.loads(path.read_text())
    assert data["preset"] == "tiny" and data["name"] == "cli" and data["config"]["dtype"] == "fp32"
    assert {(r["case"], r["provider"]) for r in data["results"]} == {
        (c, p) for c in ("D16 L8 causal", "D16 L8 p50 causal") for p in ("sigcell-padded", "torch-sigmoid")}
    assert "sigcell vs peers" in out and "x torch-sigmoid" in out


def test_report_rerenders_saved_results(tmp_path, capsys):
    """`bench report` prints the tables of saved kernel and train JSON and draws their PNGs."""
    pytest.importorskip("matplotlib")
    code = cli_main(["bench", "kernels", "--preset", "tiny", "--d", "16", "--l", "8", "--padding", "0",
                     "--modes", "fwd", "--dtype", "fp32", "--device", "cpu", "--providers", "torch-sigmoid",
                     "--rep-ms", "1", "--warmup-ms", "0", "--no-plot", "--no-table", "--no-matmul",
                     "--name", "rep", "--out", str(tmp_path)])
    assert code == 0
    (kernels,) = tmp_path.glob("rep-*.json")
    train = tmp_path / "train.json"
    saved = sorted(Path(__file__).parents[2].glob("benchmarks/results/train-quick-*.json"))
    assert saved, "the repository keeps the GPU run of `bench train --preset quick`"
    train.write_text(saved[0].read_text())
    capsys.readouterr()
    assert cli_main(["bench", "report", str(kernels), str(train)]) == 0
    out = capsys.readouterr().out
    assert "torch-sigmoid" in out and "whole-step targets" in out
    assert kernels.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert train.with_suffix(".png").is_file()
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something-else"}')
    assert cli_main(["bench", "report", str(bad)]) == 2
    assert "not a sigcell benchmark result" in capsys.readouterr().err
    assert cli_main(["bench", "report", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
