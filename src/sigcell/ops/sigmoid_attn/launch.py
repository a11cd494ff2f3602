"""Kernel launches without the Triton JIT's per-call work (the host time of one attention call).

``kernel[grid](*args, **kwargs)`` on a ``triton.jit`` function binds every argument to the signature,
specializes each one, hashes the result, checks globals and builds the launch metadata before it launches:
tens of microseconds per launch, and a backward makes two launches. :class:`FastKernel` remembers the
compiled kernel under a key that is at least as specific as Triton's own specialization (tensor dtype and
16-byte alignment; every other argument by its exact value, constexprs and launch options included) and
launches it straight through its launcher on a hit. A miss (new shapes, new flags, the first call) takes
the JIT path, which compiles or finds the kernel as usual.

:class:`HostDescriptor` stands in for Triton's TMA ``TensorDescriptor`` on the host: the launcher reads
only its base, shape, strides and padding, so a hit skips the descriptor's checks; a miss turns it into the
real descriptor first.

Opt-in for now: ``SIGCELL_FAST_LAUNCH=1`` turns it on. It has CPU tests (a stand-in JIT and driver) but
has not yet run on a GPU (benchmarks/NOTES.md, 2026-12-08); without the switch every launch goes through
the JIT as before.
"""

from __future__ import annotations

import os

import torch

__all__ = ["FastKernel", "HostDescriptor", "fast_launch_enabled"]


def fast_launch_enabled() -> bool:
    """True with ``SIGCELL_FAST_LAUNCH=1``, never under the Triton interpreter (no compiled kernels)."""
    return os.environ.get("TRITON_INTERPRET") != "1" and os.environ.get("SIGCELL_FAST_LAUNCH", "0") == "1"


class HostDescriptor:
    """A host-side TMA descriptor of ``base`` read as ``shape`` / ``strides`` in ``block_shape`` blocks;
    ``layout`` is the shared-memory layout of a Gluon descriptor (None: a ``triton.jit`` kernel's)."""

    __slots__ = ("base", "block_shape", "layout", "padding", "shape", "strides")

    def __init__(self, base: torch.Tensor, shape, strides, block_shape, layout=None) -> None:
        self.base = base
        self.shape = tuple(shape)
        self.strides = tuple(strides)
        self.block_shape = tuple(block_shape)
        self.layout = layout
        self.padding = "zero"

    def key(self) -> tuple:
        # Alignment of the base and strides is asserted by the real descriptor, built on every miss.
        return (HostDescriptor, self.base.dtype, self.shape, self.strides, self.block_shape, self.layout)

    def materialize(self):
        """The Triton descriptor object that the JIT path (and its specialization) expects."""
        shape, strides, block = list(self.shape), list(self.strides), list(self.block_shape)
        if self.layout is None:
            from triton.tools.tensor_descriptor import TensorDescriptor

            return TensorDescriptor(self.base, shape, strides, block)
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

        return TensorDescriptor(self.base, shape, strides, block, self.layout)


class _Uncacheable(Exception):
    pass


_SCALARS = (int, float, bool, str, type(None))


def _arg_key(arg) -> object:
    """What the compiled kernel may depend on: Triton specializes a tensor on its dtype and whether its
    address is 16-byte aligned, and an int on its value (== 1, divisible by 16, 32- or 64-bit); keying ints
    and floats by their exact value is at least as specific."""
    kind = type(arg)
    if kind in _SCALARS:
        return (kind, arg)
    if isinstance(arg, torch.Tensor):
        return (arg.dtype, arg.data_ptr() % 16 == 0)
    if kind is HostDescriptor:
        return arg.key()
    raise _Uncacheable


def _hooked(hook) -> bool:
    """Whether a launch hook is set (a profiler's): Triton 3.6 keeps a chain of hooks, older ones None."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _materialize(arg):
    return arg.materialize() if type(arg) is HostDescriptor else arg


class FastKernel:
    """``FastKernel(jit_fn)[grid](*args, **kwargs)`` launches like ``jit_fn[grid](...)``; runtime arguments
    are positional, constexprs and launch options are keywords (their values are part of the key)."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self._compiled: dict[tuple, tuple] = {}

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    def launch(self, grid, args: tuple, kwargs: dict) -> None:
        if not fast_launch_enabled():
            self.fn[grid](*map(_materialize, args), **kwargs)
            return
        from triton import knobs
        from triton.runtime.driver import driver

        device = driver.active.get_current_device()
        try:
            key = (device, *map(_arg_key, args), *kwargs.items())
            entry = self._compiled.get(key)
        except (_Uncacheable, TypeError):  # an argument of another kind, an unhashable keyword
            key, entry = None, None
        hooks = _hooked(knobs.runtime.launch_enter_hook) or _hooked(knobs.runtime.launch_exit_hook)
        if entry is None or hooks:
            real = [_materialize(a) for a in args]
            kernel = self.fn[grid](*real, **kwargs)
            if key is not None and not hooks and kernel is not None:
                self._remember(key, kernel, device, real, kwargs)
            return
        kernel, tail = entry
        gx, gy, gz = (*grid, 1, 1)[:3]
        stream = driver.active.get_current_stream(device)
        # The launch JITFunction.run makes, without launch hooks (none is set) and their metadata.
        kernel.run(gx, gy, gz, stream, kernel.function, kernel.packed_metadata, None, None, None,
                   *args, *tail)

    def _remember(self, key, kernel, device, real_args, kwargs) -> None:
        if any(isinstance(v, torch.Tensor) for v in kwargs.values()):
            return  # a tensor passed by keyword would be frozen into the entry
        if hasattr(kernel, "result"):  # asynchronous compilation hands back a future
            kernel = kernel.result()
        binder = self.fn.device_caches[device][4]
        bound, _, _ = binder(*real_args, **kwargs)
        # The signature's parameters after the positional ones (constexprs, defaults): fixed by the key.
        tail = tuple(bound.values())[len(real_args):]
        self._compiled[key] = (kernel, tail)
