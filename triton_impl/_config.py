"""Autotuning configurations shared by the Triton kernels.

Tuning is keyed on a *shape class*: sequence lengths bucketed to powers of two (so a new length
does not trigger a new search), head dim, causal and dtype (Triton adds the tensors' dtypes to
the key itself). Configs are listed best-first for the common head dims; ``prune`` drops those
that cannot fit in shared memory and, when tuning is switched off (``FLASHDUO_AUTOTUNE=0``, used
by the test suite) or under the interpreter, keeps only the first survivor.

Tuning a new shape class costs compile time plus timing time, seconds per kernel, so both are kept
short: the candidates are compiled together on a thread pool before the autotuner times them, and
each is timed for ``TUNE_REP_MS`` (after ``TUNE_WARMUP_MS``) instead of triton's 25 / 100 ms.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import triton
import triton.testing
from triton.runtime import driver

from triton_impl import _traced
from triton_impl._env import interpreting

try:
    from triton.runtime._async_compile import AsyncCompileMode
except ImportError:  # triton without async compilation: candidates compile one by one
    AsyncCompileMode = None
try:
    from triton import knobs
except ImportError:  # triton before knobs (3.4): no direct launches
    knobs = None

# The Triton releases (major, minor), inclusive, whose compiled-kernel launcher the GPU tests have
# run direct launches on (tests/test_triton_launch.py); other releases take Triton's own path.
DIRECT_LAUNCH_TRITON = ((3, 6), (3, 6))
TRITON_RELEASE = tuple(int(x) for x in triton.__version__.split(".")[:2])

SMEM_BUDGET = 200 * 1024
TUNE_WARMUP_MS, TUNE_REP_MS = 10, 25
TUNE_KEY = ["Q_BUCKET", "K_BUCKET", "HEAD_DIM", "CAUSAL", "ROPE", "TMA_OK", "WINDOW", "CAPPED",
            "MASK", "MASK_ROWS", "VARLEN"]
COMPILE_THREADS = min(16, os.cpu_count() or 1)


def autotuning() -> bool:
    """False under the interpreter or with ``FLASHDUO_AUTOTUNE=0``: one config per shape class."""
    return not interpreting() and os.environ.get("FLASHDUO_AUTOTUNE", "1") != "0"


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the host side of a launch, on ints or the symbolic sizes of a traced call
    (``triton.cdiv`` is a constexpr function in Triton 3.6, microseconds a call)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1); symbolic sizes take ``triton``'s."""
    if n.__class__ is int:
        return 1 << (n - 1).bit_length() if n > 1 else 1
    return triton.next_power_of_2(n)


def bucket(n: int) -> int:
    """Sequence-length class used as an autotune key: next power of two in [64, 16384]."""
    return min(max(next_power_of_2(n), 64), 16384)


def block_d(head_dim: int) -> int:
    """Head dim padded to the power of two the kernels tile with (80, 96 -> 128)."""
    return max(next_power_of_2(head_dim), 16)


def _cfg(bm: int, bn: int, warps: int, stages: int, tma: bool = False,
         maxnreg: int | None = None) -> triton.Config:
    tiles = {"BLOCK_M": bm, "BLOCK_N": bn}
    if tma:
        tiles["TMA"] = True
    return triton.Config(tiles, num_warps=warps, num_stages=stages, maxnreg=maxnreg)


_INTERPRETER = [_cfg(32, 16, 4, 1)]

# (BLOCK_M, BLOCK_N, num_warps, num_stages[, TMA[, maxnreg]]); BLOCK_M tiles queries, BLOCK_N
# keys. TMA rows load through tensor descriptors; a maxnreg caps the registers of a thread (at 128,
# two 8-warp programs share an SM). Both are candidates only where the kernel argument TMA_OK
# says so: where a descriptor can describe the tensors, in eager launches (a launch recorded for
# torch.compile can pass neither).
FWD = [
    (128, 64, 4, 3), (128, 128, 8, 3), (128, 64, 8, 3), (128, 128, 8, 2),
    (128, 64, 8, 4), (64, 64, 4, 3), (64, 128, 4, 3), (64, 32, 4, 2), (128, 32, 4, 3),
    (128, 64, 8, 3, True), (64, 64, 4, 3, True), (64, 128, 4, 3, True), (32, 32, 4, 1),
    (128, 64, 8, 2, False, 128), (128, 64, 8, 2, True, 128),
]
BWD_DKDV = [
    (64, 128, 8, 3), (64, 128, 8, 2), (32, 128, 8, 3), (32, 128, 4, 3), (64, 64, 4, 3),
    (128, 128, 8, 2), (32, 64, 4, 2), (16, 64, 4, 2), (16, 32, 4, 1),
    (64, 128, 8, 2, True), (32, 64, 4, 2, True),
]
# The backward's TMA rows load the streamed tiles (Q, dO for dK/dV; K, V for dQ) through
# descriptors, under the same TMA_OK rule as the forward's.
# One launch for both backward passes (``triton_impl.bwd._bwd_kernel``): BLOCK_M rows of queries
# per step and BLOCK_N keys resident for dK/dV; the dQ programs swap the two.
BWD_ONE_LAUNCH = [
    (64, 128, 8, 3), (64, 128, 8, 2), (32, 128, 8, 3), (32, 128, 4, 3), (64, 64, 4, 3),
    (32, 64, 4, 3), (64, 128, 4, 2), (32, 64, 4, 2), (16, 64, 4, 2), (16, 32, 4, 1),
    (64, 128, 8, 3, True),
]
BWD_DQ = [
    (128, 64, 8, 3), (128, 64, 8, 2), (64, 64, 4, 3), (128, 128, 8, 2),
    (64, 32, 4, 2), (32, 32, 4, 2), (16, 32, 4, 1),
    (128, 64, 8, 3, True),
]


def configs(table: list[tuple]) -> list[triton.Config]:
    """The autotune candidates for one kernel (a single small config under the interpreter)."""
    return list(_INTERPRETER) if interpreting() else [_cfg(*row) for row in table]


def _smem_bytes(cfg: triton.Config, bd: int, elt: int, resident: str) -> int:
    """Rough shared memory of a config: resident tile, pipelined streamed tiles, one score tile."""
    bm, bn, stages = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.num_stages
    scores = 2 * bm * bn * elt
    if resident == "m":
        return (bm + 2 * bn * stages) * bd * elt + scores
    return (2 * bn + 2 * bm * stages) * bd * elt + scores


def make_prune(resident: str):
    """Build an early-prune hook: drop configs over the shared-memory budget, keep one if not tuning.

    ``resident`` says which tile stays in place while the other streams: "m" (queries, forward and
    dQ) or "n" (keys and values, dK/dV).
    """

    def prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
        bd = named_args.get("BLOCK_D", kwargs.get("BLOCK_D"))
        elt = named_args["Q"].element_size()
        tma_ok = named_args.get("TMA_OK", kwargs.get("TMA_OK", False))
        fits = [c for c in configs if _smem_bytes(c, bd, elt, resident) <= SMEM_BUDGET
                and (tma_ok or not (c.kwargs.get("TMA", False) or c.maxnreg))]
        if bd >= 256:
            fits = [c for c in fits if c.kwargs["BLOCK_M"] <= 64 and c.kwargs["BLOCK_N"] <= 64]
        fits = fits or configs[-1:]
        if autotuning():
            return fits
        warps = 8 if bd >= 128 else 4
        return sorted(fits, key=lambda c: c.num_warps != warps)[:1]

    return prune


def _time_candidate(kernel_call, quantiles):
    """The autotuner's timer: triton's ``do_bench`` with the short tuning budget."""
    return triton.testing.do_bench(kernel_call, warmup=TUNE_WARMUP_MS, rep=TUNE_REP_MS,
                                   quantiles=quantiles)


def time_candidate(call) -> float:
    """Median ms of ``call()`` with the tuning budget (for choices the autotuner does not make)."""
    return triton.testing.do_bench(call, warmup=TUNE_WARMUP_MS, rep=TUNE_REP_MS,
                                   return_mode="median")


def autotuned(table: list[tuple], resident: str):
    """``triton.autotune`` over ``table`` keyed on the shape class (``TUNE_KEY``), pruned by
    ``make_prune(resident)`` and timed with the short tuning budget."""
    return triton.autotune(configs=configs(table), key=TUNE_KEY,
                           prune_configs_by={"early_config_prune": make_prune(resident)},
                           do_bench=_time_candidate)


def _compile_candidates(kernel, grid, args: tuple, kwargs: dict) -> None:
    """Compile every candidate config of ``kernel`` for these arguments at once on a thread pool
    (the autotuner would compile them one by one as it times them). A candidate that fails to
    compile is left for the autotuner, which compiles it again and discards it."""
    if AsyncCompileMode is None:
        return
    with ThreadPoolExecutor(COMPILE_THREADS) as pool, AsyncCompileMode(pool, ignore_errors=True):
        kernel.warmup(*args, grid=grid, **kwargs)


_CHOSEN: dict[tuple, triton.Config] = {}
# kernel name ("fwd", "dkdv", ...) -> the config its latest ``launch`` used
_LAUNCHED: dict[str, triton.Config] = {}
# (kernel and shape class, device, argument signature, constexprs and options)
#   -> (compiled kernel, values of the parameters after the positional arguments: constexprs and
#       config options from meta, defaults for the rest, the descriptor layouts of the signature)
_COMPILED: dict[tuple, tuple[object, tuple, tuple]] = {}
# Entries kept before ``_COMPILED`` starts afresh: its signatures hold exact sizes, so a caller
# whose shapes keep changing would otherwise grow it without bound.
COMPILED_LIMIT = 4096
_PLAIN = frozenset({int, float})


def _signature(args: tuple) -> tuple:
    """What a launch's compiled kernel depends on, for each positional argument, or finer: a
    tensor's dtype and 16-byte alignment; an int's or a float's exact value (finer than Triton's
    specialization on == 1 and divisibility by 16, and much cheaper to form); a host tensor
    descriptor's block shape, dtype and layout (by identity: hashing a layout dataclass costs
    microseconds a launch, and ``_COMPILED`` keeps the layouts of its keys alive, so an id is
    never reused while it is a key); other values' type."""
    return tuple([a if a.__class__ in _PLAIN else
                  (a.dtype, a.data_ptr() & 15 == 0) if a.__class__ is torch.Tensor
                  or isinstance(a, torch.Tensor) else _descriptor_signature(a) for a in args])


def _descriptor_signature(a: object) -> object:
    block = getattr(a, "block_shape", None)
    if block is None:
        return type(a)
    return type(a), *block, id(getattr(a, "layout", None)), a.base.dtype


def _layouts(args: tuple) -> tuple:
    """The descriptor layouts among ``args``, kept with a ``_COMPILED`` entry whose key holds
    their ids."""
    return tuple(getattr(a, "layout", None) for a in args if hasattr(a, "block_shape"))


def direct_launch() -> bool:
    """Whether launches may skip ``JITFunction.run`` (``_launch_compiled``): only on the Triton
    releases in ``DIRECT_LAUNCH_TRITON`` (the launcher call it replays is Triton's private API),
    and not with ``FLASHDUO_DIRECT_LAUNCH=0``."""
    lo, hi = DIRECT_LAUNCH_TRITON
    return (knobs is not None and lo <= TRITON_RELEASE <= hi
            and os.environ.get("FLASHDUO_DIRECT_LAUNCH", "1") != "0")


def _hooked() -> bool:
    """True when a launch hook (a profiler, say) is installed: launches then take Triton's own
    path so that the hook sees them."""
    hooks = (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook)
    return any(h is not None and getattr(h, "calls", True) for h in hooks)


# Per thread: the launches of the call being recorded for a launch plan (``triton_impl._plans``),
# or None when no call is; ``_RECORDINGS`` counts the threads recording one (under
# ``_RECORDINGS_LOCK``), so that launches look no further while it is 0.
_RECORDING = threading.local()
_RECORDINGS = 0
_RECORDINGS_LOCK = threading.Lock()


class Recording:
    """What a call launched while a plan records it: ``launches``, for each launch (compiled
    kernel, grid, arguments, tail) where it was a direct launch of a remembered kernel, or None
    where it took another path (which a plan cannot replay); ``named``, the (kernel name, config)
    pairs ``launched_configs`` was told."""

    def __init__(self) -> None:
        self.launches: list[tuple | None] = []
        self.named: list[tuple[str, triton.Config]] = []


def recorder() -> list | None:
    """The current thread's ``Recording.launches`` while a plan records, else None."""
    rec = getattr(_RECORDING, "rec", None) if _RECORDINGS else None
    return None if rec is None else rec.launches


def start_recording(rec: Recording | None) -> None:
    """Note this thread's launches in ``rec`` from now on; None stops."""
    global _RECORDINGS
    with _RECORDINGS_LOCK:
        was = getattr(_RECORDING, "rec", None)
        _RECORDINGS += (rec is not None) - (was is not None)
        _RECORDING.rec = rec


def _launch_compiled(fn, grid, key: tuple, args: tuple, meta: dict) -> None:
    """Launch the ``triton.jit`` function ``fn`` with ``meta`` (constexprs and config options).

    The first launch of an argument signature goes through Triton's ``JITFunction.run`` and keeps
    the compiled kernel it returns; later ones hand the arguments to that kernel's launcher
    directly, skipping ``run``'s per-launch specialization, cache lookup and launch metadata (tens
    of microseconds of host time, which show at small sizes). ``grid``: a tuple or a function of
    ``meta``. Without ``direct_launch()``, every launch takes Triton's own path.
    """
    size = tuple(grid(meta) if callable(grid) else grid) + (1, 1)
    noted = recorder()
    if not direct_launch():
        if noted is not None:
            noted.append(None)
        fn[size[:3]](*args, **meta)
        return
    device = driver.active.get_current_device()
    sig = (key, device, _signature(args), tuple(meta.items()))
    hit = _COMPILED.get(sig)
    if hit is None or _hooked():
        if noted is not None:
            noted.append(None)
        compiled = fn[size[:3]](*args, **meta)
        if hit is None and hasattr(compiled, "packed_metadata"):
            if len(_COMPILED) >= COMPILED_LIMIT:
                _COMPILED.clear()
            tail = tuple(meta[p.name] if p.name in meta else p.default
                         for p in fn.params[len(args):])
            _COMPILED[sig] = (compiled, tail, _layouts(args))
        return
    compiled, tail, _ = hit
    if noted is not None:
        noted.append((compiled, size[:3], args, tail))
    stream = driver.active.get_current_stream(device)
    try:
        compiled.run(size[0], size[1], size[2], stream, compiled.function,
                     compiled.packed_metadata, None, None, None, *args, *tail)
    except TypeError:  # a launcher that takes other arguments (another Triton): its own path
        if noted is not None:
            noted[-1] = None
        fn[size[:3]](*args, **meta)


def launch_jit(fn, grid, *args, **meta) -> None:
    """Launch a kernel that is not autotuned (``fn[grid](*args, **meta)``) through
    ``_launch_compiled``; under the interpreter, as usual; while ``_traced.recording()``, recorded
    for torch.compile. ``grid``: a tuple."""
    if _traced.active() or interpreting():
        _unplannable()
        if _traced.active():
            _traced.launch_jit(fn, grid, args, meta)
        else:
            fn[grid](*args, **meta)
    else:
        _launch_compiled(fn, grid, (fn,), args, meta)


def _unplannable() -> None:
    """Note, while a plan records, a launch that does not go through ``_launch_compiled``."""
    noted = recorder()
    if noted is not None:
        noted.append(None)


def describe(config: triton.Config) -> str:
    """A config in short: "BLOCK_MxBLOCK_N wWARPS sSTAGES", plus " tma" for descriptor loads,
    " gluon" for the Gluon forward (``triton_impl.gluon_fwd``, " gluon persistent" with one program
    an SM) and " rN" for a register cap of N a thread."""
    kw = config.kwargs
    tma = " tma" if kw.get("TMA") else " gluon" if kw.get("GLUON") else ""
    tma += " persistent" if kw.get("PERSISTENT") else ""
    cap = f" r{config.maxnreg}" if config.maxnreg else ""
    return f"{kw['BLOCK_M']}x{kw['BLOCK_N']} w{config.num_warps} s{config.num_stages}{tma}{cap}"


def launched_configs(reset: bool = False) -> dict[str, str]:
    """The config each autotuned kernel's latest launch in this process used, by kernel name
    ("fwd", "bwd", "dkdv", "dq"), as ``describe`` writes it; ``reset`` forgets them afterwards
    (the benchmark reads them after timing a cell)."""
    seen = {name: describe(config) for name, config in _LAUNCHED.items()}
    if reset:
        _LAUNCHED.clear()
    return seen


def record_launch(name: str, config: triton.Config) -> None:
    """Note that kernel ``name`` ran with ``config``, for ``launched_configs`` (and for a plan
    that records the call)."""
    _LAUNCHED[name] = config
    rec = getattr(_RECORDING, "rec", None) if _RECORDINGS else None
    if rec is not None:
        rec.named.append((name, config))


def _kernel_name(kernel) -> str:
    return kernel.fn.__name__.strip("_").removesuffix("_kernel")


def launch(kernel, grid, shape_class: tuple, *args, config: triton.Config | None = None,
           **kwargs) -> None:
    """Launch an autotuned kernel, going through the autotuner only once per shape class.

    The first launch of a shape class tunes (or picks the single config) as usual; later ones
    launch the remembered config's compiled kernel directly (``_launch_compiled``), skipping the
    autotuner's and the JIT's per-call argument handling, which shows at small sizes.
    ``shape_class`` must determine the autotune key: (Nq bucket, Nk bucket, D, causal, dtype).
    ``config``: launch this one instead, without tuning and without remembering it. While
    ``_traced.recording()``, the launch is recorded for torch.compile with the chosen config.
    """
    if config is not None:
        _unplannable()
        kernel.fn[grid](*args, **kwargs, **config.all_kwargs())
        record_launch(_kernel_name(kernel), config)
        return
    if _traced.active():
        _unplannable()
        shape_class = _traced.concrete(shape_class)
        key = (kernel, *shape_class)
        _traced.launch(kernel, grid, key, args, kwargs, _CHOSEN,
                       lambda g, *a, **kw: launch(kernel, g, shape_class, *a, **kw))
        return
    key = (kernel, *shape_class)
    config = _CHOSEN.get(key)
    if config is None:
        _unplannable()
        if autotuning():
            _compile_candidates(kernel, grid, args, kwargs)
        kernel[grid](*args, **kwargs)
        config = _CHOSEN[key] = kernel.best_config
    elif interpreting():
        _unplannable()
        kernel.fn[grid](*args, **kwargs, **config.all_kwargs())
    else:
        _launch_compiled(kernel.fn, grid, key, args, {**kwargs, **config.all_kwargs()})
    record_launch(_kernel_name(kernel), config)
