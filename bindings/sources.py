"""The one list of sources and flags of the CUDA extension, used by the JIT loader and setup.py."""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAME = "flashduo_cuda"

SOURCES = [
    "bindings/flash_api.cpp",
    "cuda/flash/fwd_fp16_hdim64.cu",
    "cuda/flash/fwd_fp16_hdim128.cu",
    "cuda/flash/fwd_bf16_hdim64.cu",
    "cuda/flash/fwd_bf16_hdim128.cu",
    "cuda/flash/bwd_fp16_hdim64.cu",
    "cuda/flash/bwd_fp16_hdim128.cu",
    "cuda/flash/bwd_bf16_hdim64.cu",
    "cuda/flash/bwd_bf16_hdim128.cu",
    "cuda/flash/fwd_short_plan.cu",
    "cuda/flash/sm90/probe.cu",
] + [f"cuda/flash/sm90/{kind}_sm90_{t}_hdim{d}.cu" for kind in ("fwd", "bwd")
     for t in ("fp16", "bf16") for d in (64, 96, 128, 256)]
DEPENDS = ["cuda/flash/api.h", "cuda/flash/params.h", "cuda/flash/common.cuh",
           "cuda/flash/fwd_tile.cuh", "cuda/flash/fwd_kernel.cuh", "cuda/flash/fwd_short_kernel.cuh",
           "cuda/flash/bwd_kernel.cuh", "cuda/flash/sm90/ptx.cuh", "cuda/flash/sm90/wgmma.cuh",
           "cuda/flash/sm90/tensor_map.h", "cuda/flash/sm90/fwd_kernel.cuh",
           "cuda/flash/sm90/fwd_launch.cuh", "cuda/flash/sm90/bwd_kernel.cuh",
           "cuda/flash/sm90/rope.cuh"]
CXX_FLAGS = ["-O3"]
NVCC_FLAGS = ["-O3", "-lineinfo", "--use_fast_math"]


def source_paths() -> list[str]:
    """Absolute paths of SOURCES."""
    return [str(ROOT / s) for s in SOURCES]
