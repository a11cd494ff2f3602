"""``sigcell stress`` / ``sigcell analyze``: outputs and bad-input errors (exit code 2, one-line message)."""

import json

from sigcell.cli import main


def _fails(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err, err


def test_stress_bad_inputs(tmp_path, capsys):
    _fails(capsys, ["stress"], "--out is required")
    _fails(capsys, ["stress", "--plot-only", str(tmp_path / "missing.json")], "no stress results")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _fails(capsys, ["stress", "--plot-only", str(bad)], "not valid JSON")
    bad.write_text(json.dumps({"kind": "other"}))
    _fails(capsys, ["stress", "--plot-only", str(bad)], "not a sigcell stress results file")
    _fails(capsys, ["stress", "--out", str(tmp_path / "o"), "--set", "nokey"], "KEY=VALUE")
    _fails(capsys, ["stress", "--out", str(tmp_path / "o"), "--set", "model.nope=1"], "unknown")
    _fails(capsys, ["stress", "--out", str(tmp_path / "o"), "--factor", "1"], "factor")
    _fails(capsys, ["stress", "--out", str(tmp_path / "o"), "--seeds", "-1"], "seeds")


def test_analyze_bad_inputs(tmp_path, capsys):
    assert main(["analyze"]) == 2
    capsys.readouterr()
    out = str(tmp_path / "o")
    _fails(capsys, ["analyze", "jacobian", "--out", out, "--lengths", "1", "--no-layer"], "lengths")
    _fails(capsys, ["analyze", "jacobian", "--out", out, "--scales", "-2", "--no-layer"], "scales")
    _fails(capsys, ["analyze", "jacobian", "--out", out, "--layers", "7", "--lengths", "4", "--scales", "1",
                    "--layer-lengths", "3", "--layer-scales", "1"], "out of range")
    _fails(capsys, ["analyze", "sinks", "--out", out, "--threshold", "1.5"], "threshold")
    _fails(capsys, ["analyze", "sinks", "--out", out, "--run", str(tmp_path / "nope")], "no checkpoint")
    _fails(capsys, ["analyze", "sinks", "--out", out, "--run", str(tmp_path), "--config", "tiny"], "--run")
    _fails(capsys, ["analyze", "sinks", "--out", out, "--cells", "0"], "cells")


def test_jacobian_and_sinks_write_results(tmp_path, capsys):
    out = tmp_path / "j"
    assert main(["analyze", "jacobian", "--out", str(out), "--lengths", "4", "16", "--scales", "1", "8",
                 "--rows", "3", "--layer-lengths", "3", "4", "--layer-scales", "1"]) == 0
    data = json.loads((out / "jacobian.json").read_text())
    assert {r["kind"] for r in data["layer"]} == {"softmax", "sigmoid"}
    assert (out / "jacobian.md").read_text().startswith("# Attention Jacobians")
    assert (out / "jacobian.png").stat().st_size > 0
    _fails(capsys, ["analyze", "jacobian", "--out", str(out), "--no-layer"], "already exists")
    s = tmp_path / "s"
    argv = ["analyze", "sinks", "--out", str(s), "--cells", "4", "--set", "data.synthetic_max_genes=20"]
    assert main(argv) == 0
    data = json.loads((s / "sinks.json").read_text())
    assert [m["attention"] for m in data["models"]] == ["softmax", "sigmoid"]
    assert "divided by its sum" in data["normalization"]
    assert (s / "sinks.png").stat().st_size > 0
