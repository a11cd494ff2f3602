"""End-to-end runs of the kernel benchmark on the CPU at tiny shapes: JSON, skips, errors, outputs."""

import json
import math

import pytest
import torch

from sigcell.bench.cases import build_cases
from sigcell.bench.kernels import KernelBenchConfig, run_kernel_bench
from sigcell.bench.providers import PROVIDERS, Provider, plain_sigmoid_attention, resolve_providers
from sigcell.bench.report import ratios

CPU = torch.device("cpu")


def _config(tmp_path, providers=("sigcell", "sdpa", "torch-sigmoid", "tritonsigmoid", "flex"), **kw):
    defaults = dict(
        name="t", cases=build_cases((16,), (8, 16), (0.0, 0.5), (False, True), seed=0, tokens=32),
        providers=resolve_providers(list(providers), CPU), modes=("fwd", "bwd", "fwd+bwd"), dtype="fp32",
        device="cpu", warmup_ms=0.0, rep_ms=1.0, out=tmp_path, plot=True, table=True,
    )
    defaults.update(kw)
    return KernelBenchConfig(**defaults)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a busy 2-core runner, OpenMP barriers turn 0.02 ms ops into 10 ms ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("bench")
    data, path = run_kernel_bench(_config(out), log=lambda line: None)
    return data, path


def test_run_writes_json_with_environment_and_config(run):
    data, path = run
    assert path.suffix == ".json" and path.name.startswith("t-")
    on_disk = json.loads(path.read_text())
    assert on_disk["results"] == data["results"] and on_disk["complete"] is True
    assert on_disk["schema"] == "sigcell.bench.kernels/1"
    env = on_disk["env"]
    for key in ("device", "gpu", "driver", "torch", "triton", "sigcell", "git_commit"):
        assert key in env
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert on_disk["config"]["dtype"] == "fp32" and on_disk["config"]["modes"] == ["fwd", "bwd", "fwd+bwd"]
    assert len(on_disk["cases"]) == 8 and all("lengths" in c for c in on_disk["cases"])


def test_every_applicable_measurement_is_present_with_consistent_numbers(run):
    data, _ = run
    got = {(r["case"], r["provider"], r["mode"]) for r in data["results"]}
    expected = set()
    for case in build_cases((16,), (8, 16), (0.0, 0.5), (False, True), seed=0, tokens=32):
        for name in ("sigcell-dense", "sigcell-padded", "sigcell-varlen", "sdpa-math", "torch-sigmoid"):
            if PROVIDERS[name].applies(case):
                expected |= {(case.label, name, m) for m in ("fwd", "bwd", "fwd+bwd")}
    assert got == expected
    for r in data["results"]:
        assert r["ms"] > 0 and r["first_call_ms"] > 0
        assert r["tflops"] == pytest.approx(r["flops"] / (r["ms"] * 1e-3) / 1e12, rel=1e-3)
        case = next(c for c in data["cases"] if c["case"] == r["case"])
        factor = {"fwd": 1, "bwd": 2.5, "fwd+bwd": 3.5}[r["mode"]] / (2 if r["causal"] else 1)
        assert r["flops"] == 4 * r["H"] * r["D"] * sum(n * n for n in case["lengths"]) * factor
        assert r["attention"] == ("softmax" if r["provider"] == "sdpa-math" else "sigmoid")
        if r["provider"] == "sdpa-math" and r["padding"] > 0:
            assert "dense [B, L] shape" in r["note"] and r["computed_tflops"] > r["tflops"]


def test_unavailable_providers_are_skipped_with_reasons(run):
    data, _ = run
    skipped = {s["provider"]: s["reason"] for s in data["skipped"]}
    assert set(skipped) == {"tritonsigmoid-dense", "tritonsigmoid-padded", "sdpa-flash", "sdpa-cudnn",
                            "sdpa-efficient", "flex", "matmul"}
    assert all("CUDA" in why for why in skipped.values())
    assert data["matmul"] is None


def test_ratios_cold_starts_and_checks(run):
    data, _ = run
    by_key = {(r["case"], r["mode"], r["provider"]): r for r in data["results"]}
    assert data["ratios"]
    for q in data["ratios"]:
        sig = by_key[(q["case"], q["mode"], q["sigcell_provider"])]
        peer = by_key[(q["case"], q["mode"], q["peer"])]
        assert q["ratio"] == pytest.approx(peer["ms"] / sig["ms"], rel=1e-3)
        assert not peer["sigcell"]
    sigcell = {"sigcell-dense", "sigcell-padded", "sigcell-varlen"}
    assert {c["provider"] for c in data["cold_start"]} == sigcell
    assert {(c["D"], c["causal"]) for c in data["checks"]} == {(16, False), (16, True)}
    assert all(c["ok"] and 0 < c["rel_err"] < 1e-5 for c in data["checks"])  # fp32 vs float64


def test_png_is_written(run):
    data, path = run
    png = path.with_suffix(".png")
    assert data["png"] == png.name and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratio_definition_on_constructed_results():
    base = {"case": "D64 L1024", "mode": "fwd"}
    results = [{**base, "provider": "sigcell-dense", "sigcell": True, "ms": 2.0, "tflops": 300.0},
               {**base, "provider": "sigcell-varlen", "sigcell": True, "ms": 4.0, "tflops": 150.0},
               {**base, "provider": "sdpa-cudnn", "sigcell": False, "ms": 3.0, "tflops": 200.0}]
    got = {(q["sigcell_provider"], q["peer"]): q for q in ratios(results, {"tflops": 600.0})}
    assert got[("sigcell-dense", "sdpa-cudnn")]["ratio"] == 1.5
    assert got[("sigcell-varlen", "sdpa-cudnn")]["ratio"] == 0.75
    assert got[("sigcell-dense", "matmul")]["of_matmul"] == 0.5
    assert ("sigcell-dense", "sigcell-varlen") not in got


class _Failing(Provider):
    attention = "softmax"

    def __init__(self, name, error):
        self.name, self.error = name, error

    def build(self, case, device, dtype, grad, seed):
        raise self.error


def test_failures_and_oom_are_recorded_and_the_run_goes_on(tmp_path):
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    providers = [_Failing("oom-peer", oom("CUDA out of memory. Tried to allocate 80 GiB")),
                 _Failing("broken-peer", RuntimeError("no kernel image\nsecond line")),
                 PROVIDERS["torch-sigmoid"]]
    cfg = _config(tmp_path, cases=build_cases((16,), (8,), seed=0, tokens=16), modes=("fwd",), check=False,
                  plot=False, table=False)
    cfg.providers = providers
    data, _ = run_kernel_bench(cfg, log=lambda line: None)
    reasons = {s["provider"]: s["reason"] for s in data["skipped"] if s["case"]}
    assert reasons["oom-peer"].startswith("out of memory: OutOfMemoryError: CUDA out of memory")
    assert reasons["broken-peer"] == "RuntimeError: no kernel image"
    assert [r["provider"] for r in data["results"]] == ["torch-sigmoid"]


def test_time_limit_skips_remaining_cases(tmp_path):
    cfg = _config(tmp_path, providers=("torch-sigmoid",), modes=("fwd",), time_limit_s=0.0, check=False,
                  plot=False, table=False)
    data, path = run_kernel_bench(cfg, log=lambda line: None)
    assert data["results"] == []
    limited = [s for s in data["skipped"] if "time limit" in s["reason"]]
    assert len(limited) == len(cfg.cases) and json.loads(path.read_text())["complete"] is True


def test_out_can_name_the_json_file(tmp_path):
    cfg = _config(tmp_path, providers=("torch-sigmoid",), cases=build_cases((16,), (8,), seed=0, tokens=8),
                  modes=("fwd",), check=False, table=False, out=tmp_path / "sub" / "mine.json")
    _, path = run_kernel_bench(cfg, log=lambda line: None)
    assert path == tmp_path / "sub" / "mine.json" and (tmp_path / "sub" / "mine.png").exists()


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        _config(tmp_path, dtype="int8")
    with pytest.raises(ValueError, match="modes"):
        _config(tmp_path, modes=("forward",))
    with pytest.raises(ValueError, match="no case"):
        _config(tmp_path, cases=[])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            _config(tmp_path, device="cuda")


def test_plain_sigmoid_matches_a_dense_autograd_formula():
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 6, 2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
               for _ in range(3))
    lens = torch.tensor([6, 4], dtype=torch.int32)
    out = plain_sigmoid_attention(q, k, v, lens, causal=True)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    got = torch.autograd.grad(out, (q, k, v), grad)

    ref_out = torch.zeros_like(out)
    for b, n in enumerate(lens.tolist()):
        s = torch.einsum("ihd,jhd->hij", q[b, :n], k[b, :n]) / math.sqrt(4) - math.log(n)
        p = torch.sigmoid(s).tril()
        ref_out[b, :n] = torch.einsum("hij,jhd->ihd", p, v[b, :n])
    want = torch.autograd.grad(ref_out, (q, k, v), grad)
    torch.testing.assert_close(out, ref_out)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
