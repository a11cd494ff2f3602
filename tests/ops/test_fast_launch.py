"""The launch cache of sigcell.ops.sigmoid_attn.launch (CPU: a stand-in JIT function and driver)."""

from __future__ import annotations

import types

import pytest
import torch

pytest.importorskip("triton")

from sigcell.ops.sigmoid_attn import launch


class _Compiled:
    """What a compiled Triton kernel offers the launcher: function handle, metadata, run."""

    function, packed_metadata = "fn-handle", "meta"

    def __init__(self, log):
        self.log = log

    def run(self, gx, gy, gz, stream, function, packed, launch_meta, enter, exit_, *args):
        self.log.append(("fast", (gx, gy, gz), stream, args))


class _Jit:
    """A JIT function with signature (X, n, BLOCK: constexpr, FLAG: constexpr = 7)."""

    def __init__(self):
        self.log, self.compiled = [], 0
        kernel = _Compiled(self.log)

        def binder(*args, **kwargs):
            names = ("X", "n", "BLOCK", "FLAG")
            bound = dict(zip(names, args, strict=False))
            bound.update({k: v for k, v in kwargs.items() if k in names})
            bound.setdefault("FLAG", 7)
            return {n: bound[n] for n in names}, None, None

        self.device_caches = {0: (None, None, None, None, binder)}
        self.kernel = kernel

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.compiled += 1
            self.log.append(("jit", grid, args, kwargs))
            return self.kernel

        return run


@pytest.fixture
def fake_driver(monkeypatch):
    from triton.runtime.driver import driver

    active = types.SimpleNamespace(get_current_device=lambda: 0, get_current_stream=lambda device: 1234)
    monkeypatch.setattr(driver, "_active", active)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("SIGCELL_FAST_LAUNCH", "1")


def test_second_launch_skips_the_jit_and_passes_every_signature_argument(fake_driver):
    jit = _Jit()
    fast = launch.FastKernel(jit)
    x = torch.zeros(4)
    fast[(2, 3)](x, 5, BLOCK=16, num_warps=4)
    fast[(9,)](x, 5, BLOCK=16, num_warps=4)
    assert jit.compiled == 1
    kind, grid, stream, args = jit.log[-1]
    assert (kind, grid, stream) == ("fast", (9, 1, 1), 1234)
    assert args[0] is x and args[1:] == (5, 16, 7)  # runtime args, then constexprs and defaults in order


@pytest.mark.parametrize(
    "second",
    [
        lambda x: ((x, 6), {"BLOCK": 16, "num_warps": 4}),  # another int value
        lambda x: ((x, 5), {"BLOCK": 32, "num_warps": 4}),  # another constexpr
        lambda x: ((x, 5), {"BLOCK": 16, "num_warps": 8}),  # another launch option
        lambda x: ((x.to(torch.float64), 5), {"BLOCK": 16, "num_warps": 4}),  # another dtype
        lambda x: ((x[1:], 5), {"BLOCK": 16, "num_warps": 4}),  # a base that is not 16-byte aligned
    ],
)
def test_anything_triton_could_specialize_on_takes_the_jit_again(fake_driver, second):
    jit = _Jit()
    fast = launch.FastKernel(jit)
    x = torch.zeros(8)
    fast[(1,)](x, 5, BLOCK=16, num_warps=4)
    args, kwargs = second(x)
    fast[(1,)](*args, **kwargs)
    assert jit.compiled == 2


def test_a_launch_hook_sends_launches_through_the_jit(fake_driver):
    from triton import knobs

    jit = _Jit()
    fast = launch.FastKernel(jit)
    x = torch.zeros(4)
    fast[(1,)](x, 5, BLOCK=16)
    hook = lambda metadata: None  # what a profiler installs
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        fast[(1,)](x, 5, BLOCK=16)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert jit.compiled == 2
    fast[(1,)](x, 5, BLOCK=16)
    assert jit.compiled == 2


def test_unknown_argument_kinds_and_switch_off_always_take_the_jit(fake_driver, monkeypatch):
    import numpy as np

    jit = _Jit()
    fast = launch.FastKernel(jit)
    x = torch.zeros(4)
    for _ in range(2):
        fast[(1,)](x, np.int64(5), BLOCK=16)  # a numpy int: no key, never cached
    assert jit.compiled == 2
    monkeypatch.setenv("SIGCELL_FAST_LAUNCH", "0")
    for _ in range(2):
        fast[(1,)](x, 5, BLOCK=16)
    assert jit.compiled == 4


def test_host_descriptor_keys_and_materializes():
    t = torch.zeros(2, 32, 4, 16, dtype=torch.bfloat16)
    d = launch.HostDescriptor(t, t.shape, t.stride(), (1, 16, 1, 16))
    same = launch.HostDescriptor(t.clone(), t.shape, t.stride(), (1, 16, 1, 16))
    other = launch.HostDescriptor(t, t.shape, t.stride(), (1, 32, 1, 16))
    assert d.key() == same.key() != other.key()
    real = d.materialize()
    assert real.base is t and list(real.block_shape) == [1, 16, 1, 16]
    assert list(real.strides) == list(t.stride())
