"""Public entry points: ``attention`` and ``attention_with_lse``."""

from __future__ import annotations

import torch

from flashduo import ops, registry
from flashduo._validate import check_inputs, last_dim_contiguous


def attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention returning the output and the softmax log-sum-exp.

    Same semantics as ``torch.nn.functional.scaled_dot_product_attention(q, k, v,
    is_causal=causal, scale=scale, enable_gqa=True)``.

    Args:
        q: (B, Hq, Nq, D). k, v: (B, Hkv, Nk, D) with Hq % Hkv == 0 (GQA / MQA).
            Any strides with the last one equal to 1 (other inputs are copied once).
        causal: top-left aligned causal mask: query i sees key j iff j <= i.
        scale: score scale, default 1 / sqrt(D).
        backend: backend name (see ``available_backends()``); None applies ``use_backend``,
            then ``FLASHDUO_BACKEND``, then the default.

    Returns:
        out: (B, Hq, Nq, D), q's dtype. Differentiable with respect to q, k, v.
        lse: (B, Hq, Nq) float32, natural log of the softmax denominator of each row (no gradient).
    """
    scale = check_inputs(q, k, v, causal, scale)
    name = registry.resolve_backend(backend)
    q, k, v = last_dim_contiguous(q), last_dim_contiguous(k), last_dim_contiguous(v)
    out, lse = ops.attention_fwd(q, k, v, causal, scale, name)
    return out, lse.detach()


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention, (B, Hq, Nq, D) -> (B, Hq, Nq, D); see ``attention_with_lse``."""
    return attention_with_lse(q, k, v, causal, scale, backend)[0]
