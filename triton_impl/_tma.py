"""When the Triton kernels load through TMA tensor descriptors, and the memory those need.

A kernel built with ``TMA=True`` makes one tensor descriptor per (batch, head) matrix on the GPU
(``tl.make_tensor_descriptor``): the Hopper copy engine then moves whole tiles, zero-filling rows
and columns outside the matrix. A descriptor needs a GPU of compute capability 9.0 or later, a
16-byte-aligned base address and 16-byte-aligned row strides; the pointer path covers the rest
(the interpreter, older GPUs, ``FLASHDUO_TMA=0``, strides a descriptor cannot describe).
"""

from __future__ import annotations

import functools
import os

import torch
import triton

from triton_impl._env import interpreting

try:
    from triton.runtime import _allocation
except ImportError:  # a triton without runtime allocations has no device-side descriptors
    _allocation = None

ALIGN = 16


@functools.cache
def _capable_device(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def tma_usable(*tensors: torch.Tensor) -> bool:
    """Whether descriptor loads can describe every (B, H, N, D) tensor here: on a GPU of capability
    9.0 or later (not the interpreter, not with ``FLASHDUO_TMA=0``), each base address and each
    stride but the last (which is 1) a multiple of 16 bytes."""
    first = tensors[0]
    if (_allocation is None or not first.is_cuda or interpreting()
            or os.environ.get("FLASHDUO_TMA", "1") == "0"
            or not _capable_device(first.device.index or 0)):
        return False
    bits = 0  # every address and byte stride OR-ed: aligned iff its low four bits are clear
    for t in tensors:
        elt = t.element_size()
        sb, sh, sn = t.stride()[:3]
        bits |= t.data_ptr() | sb * elt | sh * elt | sn * elt
    return bits % ALIGN == 0


def _scratch(size: int, alignment: int, stream: int | None) -> torch.Tensor:
    """Global memory for the descriptors a kernel makes: torch's caching allocator, so that CUDA
    graph capture records it like any other allocation."""
    return torch.empty(size, dtype=torch.int8, device="cuda")


def ensure_allocator() -> None:
    """Give Triton an allocator for descriptor scratch in this thread (autograd's backward thread
    too) unless one is set: Triton keeps it per thread and has none by default."""
    if _allocation is not None and _allocation._allocator.get() is _allocation._NULL_ALLOCATOR:
        triton.set_allocator(_scratch)
