"""How one call is timed and its memory measured, and how failures are told apart.

GPU: the median of ``triton.testing.do_bench`` after its warm-up, with the run's ``Budget``; it
clears L2 before every timed call, and inputs small enough to sit in L2 are also rotated over
several copies (``rotation_count``), so no call finds its operands cached. CPU: the median of
``CPU_MIN_REPS`` to ``CPU_MAX_REPS`` wall-clock calls after at least one warm-up call, within the
same budget (illustrative only: the numbers that matter need a GPU).

Because ``do_bench`` times each call with its own events after a cache clear, a call whose host
time exceeds the GPU time of one iteration (the clear plus its kernels) reads its host time;
``host_us`` measures that host time so that such cells can be told apart.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Impl = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]



@dataclass(frozen=True)
class Budget:
    """Time given to one timed cell, in ms: ``warmup_ms`` of untimed calls, then ``rep_ms`` of
    timed ones (``do_bench``'s ``warmup`` and ``rep``; on the CPU, bounds on the call counts)."""

    warmup_ms: float
    rep_ms: float

    def describe(self) -> str:
        """E.g. "warm-up 10 ms, rep 40 ms"."""
        return f"warm-up {self.warmup_ms:g} ms, rep {self.rep_ms:g} ms"


DEFAULT_BUDGET = Budget(10, 40)  # a kernel of 0.1-10 ms runs 4-400 timed calls
QUICK_BUDGET = Budget(10, 30)
FULL_BUDGET = Budget(25, 100)
CPU_MIN_REPS, CPU_MAX_REPS = 2, 5
HOST_CALLS = 10
HOST_BELOW_MS = 2.0  # cells slower than this are not host-bound: their host time is not measured
MAX_ROTATION = 8


def budget_for(quick: bool, full: bool) -> Budget:
    """The budget of a ``--quick``, ``--full`` or default run."""
    return QUICK_BUDGET if quick else FULL_BUDGET if full else DEFAULT_BUDGET


def rotation_count(nbytes: int, device: str) -> int:
    """Copies of the inputs to cycle through so that one call's operands (``nbytes``) are not left
    in L2 by the previous call: enough to cover twice the L2 size, at most ``MAX_ROTATION``."""
    if device != "cuda":
        return 1
    l2 = getattr(torch.cuda.get_device_properties(), "L2_cache_size", 50 * 2**20)
    return max(1, min(MAX_ROTATION, math.ceil(2 * l2 / max(nbytes, 1))))


def make_inputs(
    b: int, h: int, n: int, d: int, dtype: torch.dtype, device: str, seed: int, copies: int = 1
) -> tuple[list[Inputs], torch.Tensor]:
    """``copies`` sets of random normal q, k, v leaves (B, H, N, D) with requires_grad, and one
    dout (B, H, N, D). Never zeros: they hide wrong indexing."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def rand() -> torch.Tensor:
        return torch.randn(b, h, n, d, device=device, dtype=dtype, generator=gen)

    sets = [tuple(rand().requires_grad_() for _ in range(3)) for _ in range(copies)]
    return sets, rand()


def _step(fn: Impl, sets: Sequence[Inputs], dout: torch.Tensor, mode: str) -> Callable[[], None]:
    """One call of ``mode`` ("fwd", "bwd", "fwdbwd"), each call on the next input set."""
    turn = itertools.cycle(range(len(sets)))
    if mode == "fwd":

        def fwd() -> None:
            with torch.no_grad():
                fn(*sets[next(turn)])

        return fwd
    if mode == "fwdbwd":
        return lambda: fn(*sets[next(turn)]).backward(dout)
    if mode == "bwd":
        outs = [fn(*s) for s in sets]
        return lambda: outs[next(turn)].backward(dout, retain_graph=True)
    raise ValueError(f"mode must be 'fwd', 'bwd' or 'fwdbwd', got {mode!r}")


def _clear_grads(sets: Sequence[Inputs]) -> None:
    for s in sets:
        for t in s:
            t.grad = None


def _cpu_ms(step: Callable[[], None], sets: Sequence[Inputs], budget: Budget) -> float:
    """Median wall-clock ms of ``step``: warm-up calls for ``budget.warmup_ms`` (at least one),
    then ``CPU_MIN_REPS`` to ``CPU_MAX_REPS`` timed calls, stopping once ``budget.rep_ms`` is
    spent."""

    def timed() -> float:
        _clear_grads(sets)
        t0 = time.perf_counter()
        step()
        return (time.perf_counter() - t0) * 1e3

    spent = timed()
    while spent < budget.warmup_ms:
        spent += timed()
    times: list[float] = []
    while len(times) < CPU_MAX_REPS and (len(times) < CPU_MIN_REPS
                                         or sum(times) < budget.rep_ms):
        times.append(timed())
    return statistics.median(times)


def time_ms(fn: Impl, sets: Sequence[Inputs], dout: torch.Tensor, mode: str,
            budget: Budget) -> float:
    """Median ms of one call of ``mode`` on q, k, v (B, H, N, D) cycling over ``sets``, with
    ``budget`` for the warm-up and the timed calls."""
    step = _step(fn, sets, dout, mode)
    if dout.is_cuda:
        from triton.testing import do_bench

        ms = do_bench(step, warmup=budget.warmup_ms, rep=budget.rep_ms,
                      grad_to_none=[t for s in sets for t in s], return_mode="median")
    else:
        ms = _cpu_ms(step, sets, budget)
    _clear_grads(sets)
    return ms


def host_us(fn: Impl, sets: Sequence[Inputs], dout: torch.Tensor, mode: str) -> float:
    """Median host time of one call of ``mode``, in µs: ``HOST_CALLS`` calls issued one after
    another without synchronizing, each timed on the host clock (NaN on the CPU, where ``time_ms``
    is host time already). Run it after ``time_ms``: first calls compile and tune."""
    if not dout.is_cuda:
        return math.nan
    step = _step(fn, sets, dout, mode)
    torch.cuda.synchronize()
    times = []
    for _ in range(HOST_CALLS):
        _clear_grads(sets)
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e6)
    torch.cuda.synchronize()
    _clear_grads(sets)
    return statistics.median(times)


def peak_mb(fn: Impl, sets: Sequence[Inputs], dout: torch.Tensor, mode: str) -> float:
    """Peak GPU memory of one call above what was allocated before it, in MB (NaN on the CPU).

    The inputs are excluded: what is left is the attention's own working memory (its output,
    lse, scores if it materializes them, and for "fwdbwd" the saved tensors and gradients).
    """
    if not dout.is_cuda:
        return math.nan
    step = _step(fn, sets[:1], dout, mode)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    _clear_grads(sets)
    return peak / 2**20


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.float().abs().max().clamp_min(1e-6)
    return ((x.float() - ref.float()).abs().max() / scale).item()


def check_vs_sdpa(
    fn: Impl, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, causal: bool
) -> float:
    """Largest relative error of fn's out, dq, dk, dv against SDPA's (its default backend).

    q, k, v, dout: (B, H, N, D). NaN anywhere gives NaN.
    """
    import torch.nn.functional as F

    a = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    b = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*a)
    got = (out, *torch.autograd.grad(out, a, dout))
    ref_out = F.scaled_dot_product_attention(*b, is_causal=causal)
    ref = (ref_out, *torch.autograd.grad(ref_out, b, dout))
    errs = [_rel_err(x, r) for x, r in zip(got, ref, strict=True)]
    return math.nan if any(math.isnan(e) for e in errs) else max(errs)


class CudaContextLost(RuntimeError):
    """A sticky CUDA error (illegal address, launch failure): every later CUDA call would fail."""


_STICKY = ("illegal memory access", "unspecified launch failure", "illegal instruction",
           "misaligned address", "device-side assert", "AcceleratorError")


def raise_if_sticky(exc: BaseException, where: str) -> None:
    """Turn a sticky CUDA error into ``CudaContextLost``: the run cannot go on after it."""
    text = f"{type(exc).__name__}: {exc}"
    if any(s in text for s in _STICKY):
        raise CudaContextLost(f"{where}: {short(exc)}") from exc


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error (caught and marked OOM, not a failure)."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def short(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
