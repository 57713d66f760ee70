"""One shape at a time: make its inputs, check the flashduo backends against SDPA, time every
provider in every mode, optionally measure peak memory; each cell isolated.

A failing cell prints an ``ERR`` line and leaves a NaN row; an out-of-memory error is caught and
marked ``OOM``; a provider that refuses the shape is marked ``skip`` with its reason. Only a
sticky CUDA error (after which every CUDA call fails) ends the run, as ``CudaContextLost``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from flashduo.bench.progress import Progress
from flashduo.bench.providers import Impl, backend_of, shape_reasons
from flashduo.bench.records import (
    CHECK_RTOL,
    ERR,
    OK,
    OOM,
    SKIP,
    Check,
    Row,
    attention_flops,
    dtype_name,
    pair_flops,
    tflops,
)
from flashduo.bench.timing import (
    HOST_BELOW_MS,
    Budget,
    check_vs_sdpa,
    host_us,
    is_oom,
    make_inputs,
    peak_mb,
    raise_if_sticky,
    rotation_count,
    short,
    time_ms,
)


@dataclass
class Context:
    """What every cell of a run shares: where it runs, the environment its rows carry, the
    progress bar, the timing budget of every cell, the lists the results go to, and the wall
    seconds spent on each provider (its checks and timed cells, first-call compilation and
    autotuning included)."""

    device: str
    env: dict
    progress: Progress
    budget: Budget
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    spent: dict[str, float] = field(default_factory=dict)

    def charge(self, name: str, since: float) -> None:
        """Add the wall time from ``since`` (``time.perf_counter()``) to provider ``name``."""
        self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - since


@dataclass(frozen=True)
class Shape:
    """One benchmark shape: q, k, v (b, h, n, d) of ``dtype``, timed in ``modes``; ``pairs``:
    the (query, key) pairs that take part, summed over batch and heads, where masks leave some
    out (the masks suite counts FLOPs on them), else None."""

    tag: str
    b: int
    h: int
    n: int
    d: int
    causal: bool
    dtype: torch.dtype
    modes: tuple[str, ...]
    pairs: float | None = None

    def where(self) -> str:
        return (f"{self.tag} {dtype_name(self.dtype)} B={self.b} H={self.h} N={self.n} D={self.d}"
                f" causal={int(self.causal)}")

    def row(self, impl: str, mode: str, ctx: Context, ms: float = math.nan, status: str = OK,
            note: str = "", mem_mb: float = math.nan) -> Row:
        """The Row of ``impl`` in ``mode`` at this shape (TFLOPS from ms by the FLOP convention)."""
        if self.pairs is None:
            flops = attention_flops(self.b, self.h, self.n, self.n, self.d, self.causal, mode)
        else:
            flops = pair_flops(self.pairs, self.d, mode)
        tf = tflops(ms, flops)
        return Row(self.tag, impl, self.d, self.causal, mode, self.n, self.b, self.h, ms, tf,
                   dtype_name(self.dtype), status, mem_mb, note=note, env=ctx.env)


# an impl entry: the callable, or the reason it is not run (already printed once by the caller)
Entry = Impl | str


def _check(shape: Shape, name: str, fn: Impl, inputs: tuple, dout: torch.Tensor,
           ctx: Context) -> None:
    where = shape.where()
    try:
        err = check_vs_sdpa(fn, *inputs, dout, shape.causal)
    except Exception as exc:
        if is_oom(exc):  # not a wrong result: the timing rows will show the OOM
            ctx.progress.write(f"OOM check {name} {where}: {short(exc)}")
            torch.cuda.empty_cache()
            return
        ctx.progress.write(f"ERR check {name} {where}: {short(exc)}")
        raise_if_sticky(exc, f"check {name} {where}")
        err = math.nan
    check = Check(shape.tag, name, shape.d, shape.causal, shape.n, err)
    ctx.checks.append(check)
    if not check.ok:
        ctx.progress.write(f"WARN {name} {where}: rel err vs SDPA {err:.3g} > {CHECK_RTOL}")


def _tiles_used(name: str) -> str:
    """The tiles ``triton``'s tuned kernels ran with since the last call, e.g. "fwd 128x64 w8 s3,
    bwd 64x128 w8 s3" (``triton_impl.launched_configs``); "" for other impls."""
    if backend_of(name) != "triton":
        return ""
    from triton_impl import launched_configs

    return ", ".join(f"{kernel} {tiles}" for kernel, tiles in launched_configs(reset=True).items())


def _measure(shape: Shape, name: str, fn: Impl, mode: str, sets: list, dout: torch.Tensor,
             memory: bool, ctx: Context) -> Row:
    where = f"{name} {shape.where()} {mode}"
    try:
        _tiles_used(name)  # forget the launches of earlier cells
        ms = time_ms(fn, sets, dout, mode, ctx.budget)
        tiles = _tiles_used(name)
        host = host_us(fn, sets, dout, mode) if ms < HOST_BELOW_MS else math.nan
        _tiles_used(name)
        mem = peak_mb(fn, sets, dout, mode) if memory else math.nan
    except Exception as exc:
        oom = is_oom(exc)
        ctx.progress.write(f"{'OOM' if oom else 'ERR'} {where}: {short(exc)}")
        if not oom:
            raise_if_sticky(exc, where)
        if ctx.device == "cuda":
            torch.cuda.empty_cache()
        return shape.row(name, mode, ctx, status=OOM if oom else ERR, note=short(exc, 120))
    row = shape.row(name, mode, ctx, ms, mem_mb=mem)
    row.config = tiles
    row.host_us = host
    return row


def run_shape(
    shape: Shape,
    impls: dict[str, Entry],
    ctx: Context,
    checked: Sequence[str] = (),
    memory: bool = False,
) -> list[Row]:
    """Time every impl of ``impls`` in every mode of ``shape``; return its rows (also appended to
    ``ctx.rows``). A string entry is a reason not to run (a ``skip`` row). Impls named in
    ``checked`` are first compared with SDPA (result in ``ctx.checks``); ``memory`` adds the peak
    memory of one call to each row. Raises ``CudaContextLost`` on a sticky CUDA error."""
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        ctx.rows.append(row)
        ctx.progress.advance(f"{row.impl} {shape.where()} {row.mode}")

    per_set = 4 * shape.b * shape.h * shape.n * shape.d * shape.dtype.itemsize
    try:
        sets, dout = make_inputs(shape.b, shape.h, shape.n, shape.d, shape.dtype, ctx.device,
                                 seed=shape.n * 1000 + shape.d * 10 + int(shape.causal),
                                 copies=rotation_count(per_set, ctx.device))
    except Exception as exc:  # one failing shape must not end the run
        ctx.progress.write(f"ERR inputs {shape.where()}: {short(exc)}")
        raise_if_sticky(exc, f"inputs {shape.where()}")
        for name in impls:
            for mode in shape.modes:
                add(shape.row(name, mode, ctx, status=OOM if is_oom(exc) else ERR,
                              note=short(exc, 120)))
        return rows

    for name in checked:
        fn = impls.get(name)
        if callable(fn) and not shape_reasons(name, sets[0][0], shape.causal):
            start = time.perf_counter()
            _check(shape, name, fn, sets[0], dout, ctx)
            ctx.charge(name, start)

    for name, fn in impls.items():
        why = fn if isinstance(fn, str) else "; ".join(shape_reasons(name, sets[0][0], shape.causal))
        for mode in shape.modes:
            ctx.progress.describe(f"{shape.where()} {name} {mode}")
            if why:
                add(shape.row(name, mode, ctx, status=SKIP, note=why))
            else:
                start = time.perf_counter()
                row = _measure(shape, name, fn, mode, sets, dout, memory, ctx)
                ctx.charge(name, start)
                add(row)
    del sets, dout
    if ctx.device == "cuda":
        torch.cuda.empty_cache()
    return rows
