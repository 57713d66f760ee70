"""Tiles suite: TFLOPS of the Triton forward kernel for each forced (BLOCK_M, BLOCK_N) at one shape.

Each config goes to ``triton_impl.fwd.attention_fwd(..., config=...)``, which launches it instead of
the tuned one (the kernel alone, no front door). Each config's output is compared with SDPA's; a
wrong one is marked ERR. The CUDA kernel has a single tile configuration per head dim, so it has no
heatmap.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from flashduo.bench.cells import Context, Shape
from flashduo.bench.records import CHECK_RTOL, ERR, OOM, SKIP
from flashduo.bench.timing import is_oom, make_inputs, raise_if_sticky, short, time_ms

TILE_SHAPE = {"B": 4, "H": 16, "N": 4096, "D": 128}  # the sweep's shape at N = 4096, D = 128
TILE_DTYPE = torch.float16
BLOCK_MS = (32, 64, 128, 256)
BLOCK_NS = (16, 32, 64, 128)
QUICK_BLOCK_MS, QUICK_BLOCK_NS = (64, 128), (64, 128)
PROVIDER = "triton"


def tile_grid(quick: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(BLOCK_M values, BLOCK_N values) of the heatmap."""
    return (QUICK_BLOCK_MS, QUICK_BLOCK_NS) if quick else (BLOCK_MS, BLOCK_NS)


def tiles_count(quick: bool) -> int:
    """Number of cells ``run_tiles`` adds."""
    ms, ns = tile_grid(quick)
    return len(ms) * len(ns)


def warps_stages(bm: int, bn: int) -> tuple[int, int]:
    """num_warps and num_stages used with a (BLOCK_M, BLOCK_N) tile: 8 warps from 128 query rows,
    2 stages for the largest tiles (shared memory), else 3."""
    return (8 if bm >= 128 else 4), (2 if bm * bn >= 128 * 128 else 3)


def _forward() -> tuple[Callable | None, str | None]:
    """(triton_impl.fwd.attention_fwd, None), or (None, why it cannot be imported)."""
    try:
        from triton_impl.fwd import attention_fwd
    except Exception as exc:
        return None, f"triton_impl not importable ({short(exc)})"
    return attention_fwd, None


def run_tiles(quick: bool, ctx: Context, usable: bool) -> str | None:
    """Time the forced configs (tag "tiles"); return why the suite was skipped, or None."""
    s = TILE_SHAPE
    shape = Shape("tiles", s["B"], s["H"], s["N"], s["D"], False, TILE_DTYPE, ("fwd",))
    ms_, ns_ = tile_grid(quick)
    attention_fwd, why = _forward()
    if ctx.device != "cuda":
        why = "needs a CUDA GPU"
    elif not usable:
        why = f"the {PROVIDER} backend is unavailable"
    if why:
        for bm in ms_:
            for bn in ns_:
                _add(ctx, shape, bm, bn, math.nan, SKIP, why)
        return why
    import triton

    sets, _ = make_inputs(s["B"], s["H"], s["N"], s["D"], TILE_DTYPE, "cuda", seed=7)
    q, k, v = (t.detach() for t in sets[0])
    ref = F.scaled_dot_product_attention(q, k, v)
    scale = s["D"] ** -0.5
    for bm in ms_:
        for bn in ns_:
            warps, stages = warps_stages(bm, bn)
            cfg = triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps,
                                num_stages=stages)

            def kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       cfg: triton.Config = cfg) -> torch.Tensor:
                return attention_fwd(q, k, v, False, scale, config=cfg)[0]

            ctx.progress.describe(f"tiles BLOCK_M={bm} BLOCK_N={bn}")
            _time_config(ctx, shape, cfg, kernel, (q, k, v), ref)
    return None


def _time_config(ctx: Context, shape: Shape, cfg, kernel: Callable, qkv: tuple,
                 ref: torch.Tensor) -> None:
    bm, bn = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
    label = f"num_warps={cfg.num_warps} num_stages={cfg.num_stages}"
    try:
        out = kernel(*qkv)
        err = ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
        if not err <= CHECK_RTOL:
            _add(ctx, shape, bm, bn, math.nan, ERR, f"{label}; wrong result, rel err {err:.3g}")
            return
        ms = time_ms(kernel, [qkv], ref, "fwd", ctx.budget)
    except Exception as exc:
        ctx.progress.write(f"ERR tiles BLOCK_M={bm} BLOCK_N={bn}: {short(exc)}")
        raise_if_sticky(exc, f"tiles BLOCK_M={bm} BLOCK_N={bn}")
        torch.cuda.empty_cache()
        _add(ctx, shape, bm, bn, math.nan, OOM if is_oom(exc) else ERR, f"{label}; {short(exc, 100)}")
        return
    _add(ctx, shape, bm, bn, ms, "ok", label)


def _add(ctx: Context, shape: Shape, bm: int, bn: int, ms: float, status: str, note: str) -> None:
    row = shape.row(PROVIDER, "fwd", ctx, ms, status=status, note=note)
    row.block_m, row.block_n = bm, bn
    row.config = f"BLOCK_M={bm} BLOCK_N={bn}"
    ctx.rows.append(row)
    ctx.progress.advance(row.config)
