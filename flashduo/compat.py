"""Entry points with the argument orders of older code, through the front door (validated and
differentiable). q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D) -> out (B, Hq, Nq, D) on the ``triton``
backend."""

from __future__ import annotations

import torch

import reference
from flashduo.api import attention


def sdpa_triton_fa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """``flashduo.attention(q, k, v, causal=causal, scale=sm_scale, backend="triton")``."""
    return attention(q, k, v, causal=causal, scale=sm_scale, backend="triton")


def sdpa_triton_fa_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos_sin: reference.CosSinTable,
    causal: bool = False,
    sm_scale: float | None = None,
    has_cls: bool = True,
) -> torch.Tensor:
    """Attention with the 2D RoPE of ViTs fused into the Triton kernels.

    q (B, Hq, N, D), k/v (B, Hkv, N, D) -> (B, Hq, N, D). ``cos_sin``: a ``CosSinTable`` for the
    patch grid; N must be the grid size, plus one when ``has_cls`` (a CLS token in front, left
    unrotated). Same as ``flashduo.attention(q, k, v, causal=causal, scale=sm_scale,
    backend="triton", rope=cos_sin, num_prefix_tokens=int(has_cls))``.
    """
    return attention(q, k, v, causal=causal, scale=sm_scale, backend="triton", rope=cos_sin,
                     num_prefix_tokens=int(bool(has_cls)))


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sm_scale: float | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """:func:`sdpa_triton_fa` with the (sm_scale, causal) argument order."""
    return sdpa_triton_fa(q, k, v, causal=causal, sm_scale=sm_scale)
