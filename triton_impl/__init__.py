"""Triton FlashAttention kernels and their launchers.

``attention_fwd`` / ``attention_bwd`` are the raw launchers behind flashduo's ``triton`` backend.
``sdpa_triton_fa``, ``sdpa_triton_fa_rope`` and ``flash_attention`` are convenience entry points
with the argument orders older code used; they go through flashduo's front door, so they are
differentiable and validated.
Set ``TRITON_INTERPRET=1`` before importing to run the kernels on the CPU.
"""

from __future__ import annotations

import torch

from triton_impl.bwd import attention_bwd
from triton_impl.fwd import attention_fwd


def sdpa_triton_fa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """Attention with the Triton backend; q (B, Hq, Nq, D), k/v (B, Hkv, Nk, D) -> (B, Hq, Nq, D)."""
    import flashduo

    return flashduo.attention(q, k, v, causal=causal, scale=sm_scale, backend="triton")


def sdpa_triton_fa_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos_sin,
    causal: bool = False,
    sm_scale: float | None = None,
    has_cls: bool = True,
) -> torch.Tensor:
    """Attention with the 2D RoPE of ViTs fused into the Triton kernels.

    q (B, Hq, N, D), k/v (B, Hkv, N, D) -> (B, Hq, N, D). ``cos_sin``: a ``reference.CosSinTable``
    (``flashduo.CosSinTable``) for the patch grid; N must be the grid size, plus one when
    ``has_cls`` (a CLS token in front, left unrotated). Same as ``flashduo.attention(q, k, v,
    causal=causal, scale=sm_scale, backend="triton", rope=cos_sin, num_prefix_tokens=int(has_cls))``.
    """
    import flashduo

    return flashduo.attention(q, k, v, causal=causal, scale=sm_scale, backend="triton",
                              rope=cos_sin, num_prefix_tokens=int(bool(has_cls)))


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sm_scale: float | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Same as :func:`sdpa_triton_fa` with the (sm_scale, causal) argument order."""
    return sdpa_triton_fa(q, k, v, causal=causal, sm_scale=sm_scale)


__all__ = ["attention_fwd", "attention_bwd", "sdpa_triton_fa", "sdpa_triton_fa_rope",
           "flash_attention"]
