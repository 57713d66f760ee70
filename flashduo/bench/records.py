"""Records, names and conventions shared by every part of the benchmark.

``Row`` is one measured cell, ``Check`` one flashduo backend's comparison with SDPA on one shape.
The FLOP count follows FlashAttention's convention (see ``attention_flops``); ``environment``
names the GPU and library versions that every row carries.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

import flashduo

MODES = ("fwd", "fwdbwd")  # the ViT and scaling suites; the sweep adds "bwd"
SWEEP_MODES = ("fwd", "bwd", "fwdbwd")
FLEX = "torch-flex"
SDPA_MASK = "sdpa-mask"  # masks suite: SDPA with the same attn_mask
SDPA_PADDED = "sdpa-padded"  # masks suite: SDPA on the padded batch, key-padding mask
DENSE = "dense"  # masks suite: "<backend>-dense", the backend without the window at that N
NAIVE = "naive"
MATERIALIZING = ("triton-unfused", "torch-math", NAIVE)  # keep N x N scores in memory
NOROPE = "torch-cudnn-norope"  # the ViT-with-RoPE rows' cuDNN SDPA without the rotation
CHECK_RTOL = 5e-2  # max |x - sdpa| / max |sdpa| above this marks a backend's result SUSPECT
FLOP_NOTE = ("FLOPs = 4*B*H*N^2*D, halved when causal; x2.5 bwd, x3.5 fwd+bwd "
             "(FlashAttention's convention)")

MIN_SHOWN_TFLOPS = 0.05  # tables print TFLOPS with one decimal: below this they read 0.0

# A cell's status: measured, out of memory (caught), failed, or not run (with the reason).
OK, OOM, ERR, SKIP = "ok", "OOM", "ERR", "skip"

_MODE_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}


@dataclass
class Row:
    """One cell: impl at one shape and mode. ms and tflops are NaN unless status is "ok".

    ``mem_mb``: peak memory of one call above what was allocated before it (the scaling suite);
    ``block_m`` / ``block_n`` / ``config``: the forced kernel config (the tiles suite); for
    ``triton`` elsewhere, ``config`` names the tuned tiles its kernels ran with. ``host_us``: host
    time of one call on a GPU (``timing.host_us``); where it exceeds ``ms`` the cell reads host time.
    """

    tag: str  # "sweep", "vit", "vit-rope", "scaling", "tiles"
    impl: str
    D: int
    causal: bool
    mode: str
    N: int
    B: int
    H: int
    ms: float
    tflops: float
    dtype: str = "bfloat16"
    status: str = OK
    mem_mb: float = math.nan
    block_m: int = 0
    block_n: int = 0
    config: str = ""
    note: str = ""
    host_us: float = math.nan
    env: dict = field(default_factory=dict)


@dataclass
class Check:
    """Largest relative error (max |x - sdpa| / max |sdpa| over out, dq, dk, dv) of one backend."""

    tag: str
    impl: str
    D: int
    causal: bool
    N: int
    rel_err: float

    @property
    def ok(self) -> bool:
        return self.rel_err <= CHECK_RTOL  # False for NaN


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


def pair_flops(pairs: float, d: int, mode: str = "fwd") -> float:
    """FLOPs of one call on the (query, key) pairs that take part (summed over batch and heads):
    4·pairs·D, x1 fwd, x2.5 bwd, x3.5 both (``attention_flops`` with the masks' pairs)."""
    if mode not in _MODE_FACTOR:
        raise ValueError(f"mode must be one of {sorted(_MODE_FACTOR)}, got {mode!r}")
    return 4.0 * pairs * d * _MODE_FACTOR[mode]


def tflops(ms: float, flops: float) -> float:
    """Throughput in TFLOPS of ``flops`` done in ``ms`` milliseconds (NaN stays NaN)."""
    return flops / (ms * 1e-3) / 1e12 if ms > 0 else math.nan


def sweep_unit(rows: Iterable[Row]) -> str:
    """What the sweep's table and plots show: "tflops", or "ms" (per call) when a measured cell's
    TFLOPS would print as 0.0, as at the CPU run's tiny sizes."""
    measured = [r.tflops for r in rows if r.status == OK]
    return "tflops" if all(tf >= MIN_SHOWN_TFLOPS for tf in measured) else "ms"


def dtype_name(dtype: torch.dtype) -> str:
    """"float16" for torch.float16."""
    return str(dtype).removeprefix("torch.")


def environment() -> dict[str, object]:
    """GPU name and library versions: every row and the report carry them."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    cuda = torch.cuda.is_available()
    cap = torch.cuda.get_device_capability() if cuda else None
    return {
        "gpu": torch.cuda.get_device_name() if cuda else "cpu",
        "capability": f"{cap[0]}.{cap[1]}" if cap else "",
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "triton": triton_version,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "",
        "flashduo": flashduo.__version__,
        "autotune": os.environ.get("FLASHDUO_AUTOTUNE", "1") != "0",
    }


def header_line(env: dict[str, object]) -> str:
    """One line naming the GPU and versions: absolute numbers mean nothing without it."""
    tune = {True: "on", False: "off (FLASHDUO_AUTOTUNE=0)"}.get(env.get("autotune"), "?")
    return (f"GPU: {env['gpu']} | torch {env['torch']} (CUDA {env['cuda'] or 'none'}) | "
            f"triton {env['triton']} | cuDNN {env['cudnn'] or 'none'} | flashduo autotune {tune}")
