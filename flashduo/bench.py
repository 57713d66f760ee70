"""Benchmark: flashduo backends against PyTorch SDPA (FlashAttention-2, cuDNN) and FlexAttention.

Conventions (DESIGN.md section 4): TFLOPS by FlashAttention's count, 4·B·H·Nq·Nk·D, halved when
causal, x1 for the forward and x3.5 for forward + backward; ``triton.testing.do_bench`` medians
(it flushes L2 before every timed call); every implementation timed on the same inputs in the
same run, so the ratios are the numbers to quote. Absolute numbers always travel with the GPU
name and the torch / triton / CUDA / cuDNN versions printed in the header.

Standard sweep: bf16, D in {64, 128}, causal in {False, True}, N in 512..16384 with B = 16384 // N
and H = 2048 // D (16k tokens, hidden size 2048). A ViT-S row: B=256, H=6, N=197, D=64, in ms.

Every timed cell is isolated: an exception prints an ``ERR`` line and leaves NaN in the table.
Before timing, each flashduo backend's output and gradients are compared with SDPA's on the same
inputs (a sanity check that catches broken kernels, not a precision test).

This module measures: shapes, FLOP counts, the implementations timed, the progress bar, timing,
the SDPA check and the driver ``run_benchmark``. The ``Row`` / ``Check`` records and the constants
shared with the report are in ``flashduo.bench_types``; the tables, summary, environment header
and output files are in ``flashduo.bench_report``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

import flashduo
import reference
from flashduo.bench_report import (
    environment,
    format_sweep_table,
    format_vit_rope_table,
    format_vit_table,
    header_line,
    summary_lines,
    write_outputs,
)
from flashduo.bench_types import (
    CHECK_RTOL,
    DTYPE,
    FLEX,
    MODES,
    NAIVE,
    NOROPE,
    SDPA_IMPLS,
    Check,
    Row,
)

Impl = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

SEQLENS = (512, 1024, 2048, 4096, 8192, 16384)
QUICK_SEQLENS = (1024, 4096)
FLEX_SEQLENS = (1024, 4096, 16384)
HEAD_DIMS = (64, 128)
TOKENS = 16384  # B * N of the sweep
HIDDEN = 2048  # H * D of the sweep
DEVICE = "cuda"
VIT_SHAPE = {"B": 256, "H": 6, "N": 197, "D": 64}
WARMUP_MS, REP_MS = 25, 100

NO_GPU_MESSAGE = "no CUDA GPU visible (torch.cuda.is_available() is False): the benchmark needs one"

_MODE_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}


class NoGPUError(RuntimeError):
    """Raised by the benchmark entry points when no CUDA GPU is visible."""


def require_gpu() -> None:
    """Raise ``NoGPUError`` with a readable message unless a CUDA GPU is visible."""
    if not torch.cuda.is_available():
        raise NoGPUError(NO_GPU_MESSAGE)


def attention_flops(
    b: int, h: int, nq: int, nk: int, d: int, causal: bool, mode: str = "fwd"
) -> float:
    """FLOPs of one attention call: 4·B·H·Nq·Nk·D, halved when causal; x1 fwd, x2.5 bwd, x3.5 both.

    ``mode`` is "fwd", "bwd" or "fwdbwd" (FlashAttention's convention: the count is nominal, the
    causal half is not adjusted for the diagonal, and recomputation in the backward is not counted).
    """
    if mode not in _MODE_FACTOR:
        raise ValueError(f"mode must be one of {sorted(_MODE_FACTOR)}, got {mode!r}")
    flops = 4.0 * b * h * nq * nk * d * _MODE_FACTOR[mode]
    return flops / 2 if causal else flops


def tflops(ms: float, flops: float) -> float:
    """Throughput in TFLOPS of ``flops`` done in ``ms`` milliseconds (NaN stays NaN)."""
    return flops / (ms * 1e-3) / 1e12 if ms > 0 else math.nan


def sweep_shape(n: int, d: int) -> tuple[int, int]:
    """(B, H) of the standard sweep at sequence length n and head dim d: B·N = 16384, H·D = 2048."""
    return TOKENS // n, HIDDEN // d


def parse_backends(values: Iterable[str] | None) -> list[str]:
    """Flatten repeated / comma-separated ``--backend`` values in order; default [triton, cuda]."""
    names: list[str] = []
    for value in values or ():
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names or ["triton", "cuda"]


# ----------------------------------------------------------------------------- implementations


def flashduo_impl(name: str, causal: bool) -> Impl:
    """``flashduo.attention`` with backend ``name``; (B, H, N, D) -> (B, H, N, D)."""
    return lambda q, k, v: flashduo.attention(q, k, v, causal=causal, backend=name)


def sdpa_impl(kind: str, causal: bool) -> Impl:
    """SDPA restricted to one backend: ``kind`` is "sdpa-flash" or "sdpa-cudnn"."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "sdpa-flash": SDPBackend.FLASH_ATTENTION,
        "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    }[kind]

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return fn


ROPE_PREFIX = 1  # the CLS token of the ViT-with-RoPE section


def rope_impls(
    backends: Sequence[str], usable: dict[str, bool], table: reference.CosSinTable
) -> dict[str, Impl | None]:
    """The ViT-with-RoPE section (N = 1 + table grid): each flashduo backend with ``rope=``,
    against the rotation in PyTorch (eager, and ``torch.compile``'d) in front of each SDPA
    backend, and cuDNN SDPA without any rotation."""

    def rotate(x: torch.Tensor) -> torch.Tensor:
        return reference.apply_rope(x, table, ROPE_PREFIX)

    compiled = torch.compile(rotate)
    impls: dict[str, Impl | None] = {}
    for be in backends:
        impls[f"{be}+rope"] = (
            (lambda q, k, v, be=be: flashduo.attention(
                q, k, v, backend=be, rope=table, num_prefix_tokens=ROPE_PREFIX))
            if usable[be] else None
        )
    for kind in SDPA_IMPLS:
        sdpa = sdpa_impl(kind, False)
        impls[f"rope-eager+{kind}"] = lambda q, k, v, f=sdpa: f(rotate(q), rotate(k), v)
        impls[f"rope-compiled+{kind}"] = lambda q, k, v, f=sdpa: f(compiled(q), compiled(k), v)
    impls[NOROPE] = sdpa_impl("sdpa-cudnn", False)
    return impls


def naive_impl(causal: bool) -> Impl:
    """``reference.attention_naive``: scores and probabilities materialized in memory."""
    return lambda q, k, v: reference.attention_naive(q, k, v, causal)


def _causal_mask_mod(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


class FlexFactory:
    """``torch.compile``'d FlexAttention, one block mask per causal length.

    Dynamo recompiles per shape and silently falls back to eager (~5 TFLOPS) once its recompile
    limit is hit, so the limit is raised here before the first compile.
    """

    def __init__(self) -> None:
        import torch._dynamo
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        cfg = torch._dynamo.config
        cfg.cache_size_limit = max(cfg.cache_size_limit, 256)
        if hasattr(cfg, "accumulated_cache_size_limit"):
            cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 1024)
        self._flex = torch.compile(flex_attention, dynamic=False)
        self._create_block_mask = create_block_mask
        self._masks: dict[tuple[int, str], object] = {}

    def impl(self, causal: bool, n: int, device: torch.device | str = "cuda") -> Impl:
        """Compiled flex_attention on (B, H, n, D); a causal block mask is built lazily."""

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            mask = None
            if causal:
                key = (n, str(device))
                if key not in self._masks:
                    self._masks[key] = self._create_block_mask(
                        _causal_mask_mod, None, None, n, n, device=device
                    )
                mask = self._masks[key]
            return self._flex(q, k, v, block_mask=mask)

        return fn


# ----------------------------------------------------------------------------- progress


class Progress:
    """A progress bar on stderr: tqdm when importable, else a plain counter line."""

    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0
        self._tty = sys.stderr.isatty()
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
        else:
            interval = 0.5 if self._tty else 30.0
            self._bar = tqdm(total=total, file=sys.stderr, dynamic_ncols=True, mininterval=interval)

    def describe(self, text: str) -> None:
        """Show what runs now (before it runs, so a hang shows where)."""
        if self._bar is not None:
            self._bar.set_description_str(text, refresh=self._tty)
        elif self._tty:
            print(f"\r[{self.count}/{self.total}] {text:<60}", end="", file=sys.stderr, flush=True)

    def advance(self, text: str = "") -> None:
        """Count one finished cell."""
        self.count += 1
        if self._bar is not None:
            self._bar.update(1)
        elif not self._tty and (self.count % 10 == 0 or self.count == self.total):
            print(f"[{self.count}/{self.total}] {text}", file=sys.stderr, flush=True)

    def write(self, message: str) -> None:
        """Print a line to stderr without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            if self._tty:
                print(file=sys.stderr)
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._tty:
            print(file=sys.stderr)


# ----------------------------------------------------------------------------- timing


def time_ms(
    fn: Impl,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mode: str,
    dout: torch.Tensor | None = None,
) -> float:
    """Median time in ms of one call: "fwd" under no_grad, "fwdbwd" = forward + ``.backward(dout)``.

    q, k, v: (B, H, N, D) leaves with requires_grad; dout like the output (fixed, random).
    """
    from triton.testing import do_bench

    if mode == "fwd":
        with torch.no_grad():
            return do_bench(
                lambda: fn(q, k, v), warmup=WARMUP_MS, rep=REP_MS, return_mode="median"
            )
    if mode != "fwdbwd":
        raise ValueError(f"mode must be 'fwd' or 'fwdbwd', got {mode!r}")
    if dout is None:
        raise ValueError("mode='fwdbwd' needs dout")

    def step() -> None:
        fn(q, k, v).backward(dout)

    return do_bench(
        step, warmup=WARMUP_MS, rep=REP_MS, grad_to_none=[q, k, v], return_mode="median"
    )


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.float().abs().max().clamp_min(1e-6)
    return ((x.float() - ref.float()).abs().max() / scale).item()


def check_vs_sdpa(
    fn: Impl,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dout: torch.Tensor,
    causal: bool,
) -> float:
    """Largest relative error of fn's out, dq, dk, dv against SDPA's (its default backend).

    q, k, v, dout: (B, H, N, D). NaN anywhere gives NaN.
    """
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


def _raise_if_sticky(exc: BaseException, where: str) -> None:
    text = f"{type(exc).__name__}: {exc}"
    if any(s in text for s in _STICKY):
        raise CudaContextLost(f"{where}: {_short(exc)}") from exc


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bench_shape(
    tag: str,
    impls: dict[str, Impl | None],
    b: int,
    h: int,
    n: int,
    d: int,
    causal: bool,
    progress: Progress,
    checked: Sequence[str] = (),
    checks: list[Check] | None = None,
    device: str | None = None,
    rows: list[Row] | None = None,
) -> list[Row]:
    """Time every impl in both modes on one (B, H, N, D) bf16 shape; one Row per (impl, mode).

    ``None`` impls (unavailable, already reported) give NaN rows without running. Impls named in
    ``checked`` are first compared with SDPA and the result appended to ``checks``. Rows are
    appended to ``rows`` (a new list if None) as they finish, and that list is returned; a sticky
    CUDA error raises ``CudaContextLost`` after the rows so far are in it.
    """
    rows = [] if rows is None else rows
    device = DEVICE if device is None else device

    def add(name: str, mode: str, ms: float) -> None:
        tf = tflops(ms, attention_flops(b, h, n, n, d, causal, mode))
        rows.append(Row(tag, name, d, causal, mode, n, b, h, ms, tf))

    where = f"{tag} D={d} causal={int(causal)} N={n}"
    try:
        gen = torch.Generator(device=device).manual_seed(n * 1000 + d * 10 + int(causal))
        q, k, v = (
            torch.randn(b, h, n, d, device=device, dtype=DTYPE, generator=gen).requires_grad_()
            for _ in range(3)
        )
        dout = torch.randn(b, h, n, d, device=device, dtype=DTYPE, generator=gen)
    except Exception as exc:  # one failing shape must not end the run
        progress.write(f"ERR inputs {where}: {_short(exc)}")
        _raise_if_sticky(exc, f"inputs {where}")
        for name in impls:
            for mode in MODES:
                add(name, mode, math.nan)
                progress.advance()
        torch.cuda.empty_cache()
        return rows

    for name in checked:
        fn = impls.get(name)
        if fn is None or checks is None:
            continue
        try:
            err = check_vs_sdpa(fn, q, k, v, dout, causal)
        except Exception as exc:
            progress.write(f"ERR check {name} {where}: {_short(exc)}")
            _raise_if_sticky(exc, f"check {name} {where}")
            err = math.nan
        check = Check(tag, name, d, causal, n, err)
        checks.append(check)
        if not check.ok:
            progress.write(f"WARN {name} {where}: rel err vs SDPA {err:.3g} > {CHECK_RTOL}")

    for name, fn in impls.items():
        for mode in MODES:
            progress.describe(f"{where} {name} {mode}")
            ms, error = math.nan, None
            if fn is not None:
                try:
                    ms = time_ms(fn, q, k, v, mode, dout)
                except Exception as exc:
                    progress.write(f"ERR {name} {where} {mode}: {_short(exc)}")
                    error = exc
            add(name, mode, ms)
            progress.advance(f"{where} {name} {mode}")
            if error is not None:
                _raise_if_sticky(error, f"{name} {where} {mode}")
                torch.cuda.empty_cache()  # e.g. after an out-of-memory error
    del q, k, v, dout
    torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------- driver


def _sweep_impls(
    backends: Sequence[str],
    usable: dict[str, bool],
    causal: bool,
    n: int,
    flex: FlexFactory | None,
    with_flex: bool,
) -> dict[str, Impl | None]:
    impls: dict[str, Impl | None] = {
        be: flashduo_impl(be, causal) if usable[be] else None for be in backends
    }
    for kind in SDPA_IMPLS:
        impls[kind] = sdpa_impl(kind, causal)
    if with_flex:
        impls[FLEX] = flex.impl(causal, n) if flex is not None else None
    return impls


def run_benchmark(
    backends: Sequence[str] = ("triton",),
    quick: bool = False,
    flex: bool = True,
    out_dir: str | None = None,
    head_dims: Sequence[int] = HEAD_DIMS,
    seqlens: Sequence[int] | None = None,
    vit: bool = True,
    sweep: bool = True,
) -> int:
    """Run the sweep and the ViT rows (each unless switched off), print the tables and summary to
    stdout; return an exit code.

    Returns 0 when every flashduo cell ran and passed the SDPA check, 1 otherwise (missing the
    speed target does not fail the run: it is a measurement). Raises ``NoGPUError`` without a GPU
    and ``ValueError`` for an unregistered backend name.
    """
    require_gpu()
    backends = list(backends)
    for be in backends:
        flashduo.get_backend(be)  # ValueError naming the registered backends
    t0 = time.time()
    env = environment()
    print(header_line(env), flush=True)

    usable = {}
    for be, why in flashduo.available_backends().items():
        if be in backends:
            usable[be] = why is None
            if why:
                print(f"WARN backend {be!r} unavailable ({why}): its cells will be NaN", flush=True)
    seqlens = tuple(seqlens or (QUICK_SEQLENS if quick else SEQLENS))
    flex = flex and not quick
    factory = None
    if flex:
        try:
            factory = FlexFactory()
        except Exception as exc:
            print(f"WARN flex unavailable ({_short(exc)}): its cells will be NaN", flush=True)

    flex_ns = [n for n in seqlens if flex and n in FLEX_SEQLENS]
    per_shape = len(backends) + len(SDPA_IMPLS)
    total = len(MODES) * 2 * len(head_dims) * (len(seqlens) * per_shape + len(flex_ns))
    if not sweep:
        head_dims, total = (), 0
    if vit:
        total += len(MODES) * (per_shape + 1 + int(flex))
        total += len(MODES) * (len(backends) + 2 * len(SDPA_IMPLS) + 1)
    progress = Progress(total)
    rows: list[Row] = []
    checks: list[Check] = []
    checked = [be for be in backends if usable[be]]
    aborted = None
    try:
        for d in head_dims:
            for causal in (False, True):
                for n in seqlens:
                    b, h = sweep_shape(n, d)
                    impls = _sweep_impls(backends, usable, causal, n, factory, n in flex_ns)
                    bench_shape("sweep", impls, b, h, n, d, causal, progress, checked, checks,
                                rows=rows)
        if vit:
            s = VIT_SHAPE
            impls = _sweep_impls(backends, usable, False, s["N"], factory, flex)
            impls[NAIVE] = naive_impl(False)
            bench_shape("vit", impls, s["B"], s["H"], s["N"], s["D"], False, progress, checked,
                        checks, rows=rows)
            grid = math.isqrt(s["N"] - ROPE_PREFIX)
            table = reference.CosSinTable(100.0, grid, s["D"], device=DEVICE)
            bench_shape("vit-rope", rope_impls(backends, usable, table), s["B"], s["H"], s["N"],
                        s["D"], False, progress, rows=rows)
    except CudaContextLost as exc:
        aborted = f"ABORTED, the CUDA context is lost after {exc}; the tables hold what ran before"
    finally:
        progress.close()

    sweep_table = format_sweep_table(rows, backends)
    parts = [
        header_line(env),
        "",
        f"TFLOPS, {str(DTYPE).removeprefix('torch.')}, B*N = {TOKENS}, H*D = {HIDDEN}; "
        "FLOPs 4*B*H*N^2*D (/2 causal), x3.5 fwdbwd; do_bench median "
        f"(warmup {WARMUP_MS} ms, rep {REP_MS} ms). Ratio rows: speed ratio, > 1 = faster.",
        "",
        sweep_table,
    ]
    if vit:
        parts += ["", format_vit_table(rows, backends), "", format_vit_rope_table(rows, backends)]
    summary = summary_lines(rows, backends, checks)
    if aborted:
        summary.insert(0, aborted)
    parts += ["", "Summary:", *(f"- {line}" for line in summary),
              f"- wall time {time.time() - t0:.0f} s"]
    text = "\n".join(parts)
    print()
    print(text, flush=True)
    if out_dir:
        write_outputs(out_dir, rows, checks, env, text)
        print(f"wrote {os.path.join(out_dir, 'results.json')} and table.md", flush=True)

    failed = [r for r in rows if r.impl in backends and math.isnan(r.ms)]
    return 1 if aborted or failed or any(not c.ok for c in checks) else 0
