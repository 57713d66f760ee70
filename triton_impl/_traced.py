"""Launches that ``torch.compile`` records instead of running: the body of a ``triton_op``.

Importable without triton (the front door registers its triton ops where triton is installed).

Inside ``recording()``, ``_config.launch`` and ``_config.launch_jit`` hand each kernel to
``torch.library.wrap_triton``, so that a ``torch.library.triton_op`` built on the launchers shows
Inductor the Triton kernels themselves (Inductor then launches them from its generated code, CUDA
graphs included). An autotuned kernel is recorded with the config eager calls would use: the
shape class's remembered choice, or one tuned here on real tensors of the traced shapes. Called
outside a trace (a triton_op run eagerly), ``wrap_triton`` returns the kernel and it simply runs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
from torch.utils._python_dispatch import _disable_current_modes

_STATE = threading.local()
# The config options a recorded launch passes along with the kernel's own arguments.
OPTIONS = ("num_warps", "num_stages")


def active() -> bool:
    """True inside ``recording()`` in this thread."""
    return getattr(_STATE, "on", False)


@contextlib.contextmanager
def _switched(on: bool) -> Iterator[None]:
    prev = active()
    _STATE.on = on
    try:
        yield
    finally:
        _STATE.on = prev


def recording() -> contextlib.AbstractContextManager[None]:
    """Within: launches are recorded for ``torch.compile`` (see the module docstring)."""
    return _switched(True)


def _concrete(x):
    """A real value for a traced one: an int for a symbolic int, a random tensor of the same
    shape, strides, dtype and device for a fake one (values do not change a kernel's speed)."""
    if isinstance(x, torch.SymInt):
        return int(x)
    if not isinstance(x, torch.Tensor):
        return x
    t = torch.empty_strided(tuple(int(s) for s in x.shape), tuple(int(s) for s in x.stride()),
                            dtype=x.dtype, device=x.device)
    return t.normal_() if t.is_floating_point() else t.zero_()


def concrete(values: tuple) -> tuple:
    """``values`` with symbolic ints made concrete (a shape class, a key)."""
    return tuple(int(x) if isinstance(x, torch.SymInt) else x for x in values)


def _with_defaults(fn, args: tuple, meta: dict) -> dict:
    """``meta`` in the kernel's parameter order, plus the defaults of the parameters neither
    ``args`` nor ``meta`` give, then the config options: Inductor compiles a recorded kernel with
    every parameter named, in order."""
    ordered = {p.name: meta[p.name] if p.name in meta else p.default
               for p in fn.params[len(args):] if p.name in meta or p.has_default}
    return {**ordered, **{k: v for k, v in meta.items() if k not in ordered}}


def launch_jit(fn, grid, args: tuple, meta: dict) -> None:
    """Record ``fn[grid](*args, **meta)``."""
    meta = dict(zip(meta, concrete(tuple(meta.values()))))  # constexprs must be concrete
    torch.library.wrap_triton(fn)[tuple(grid)](*args, **_with_defaults(fn, args, meta))


def launch(kernel, grid, key: tuple, args: tuple, kwargs: dict, chosen: dict,
           tune: Callable[..., None]) -> None:
    """Record an autotuned ``kernel`` with the config chosen for ``key`` in ``chosen``; when there
    is none yet, ``tune(grid, *args, **kwargs)`` picks it on concrete copies of the arguments."""
    kwargs = dict(zip(kwargs, concrete(tuple(kwargs.values()))))  # constexprs must be concrete
    if key not in chosen:
        with _disable_current_modes(), _switched(False):
            def concrete_grid(meta: dict) -> tuple[int, ...]:
                return tuple(int(x) for x in grid(meta))

            tune(concrete_grid, *(_concrete(a) for a in args), **kwargs)
    config = chosen[key]
    meta = {**kwargs, **config.kwargs,
            **{name: getattr(config, name) for name in OPTIONS if getattr(config, name) is not None}}
    torch.library.wrap_triton(kernel.fn)[tuple(grid(meta))](
        *args, **_with_defaults(kernel.fn, args, meta))
