"""Public entry points: ``attention`` and ``attention_with_lse``."""

from __future__ import annotations

import torch

import reference
from flashduo import ops, registry
from flashduo._validate import check_inputs, check_masks, last_dim_contiguous


def attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    backend: str | None = None,
    rope: reference.CosSinTable | None = None,
    num_prefix_tokens: int = 1,
    deterministic: bool | None = None,
    *,
    attn_mask: torch.Tensor | None = None,
    window: tuple[int, int] | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention returning the output and the softmax log-sum-exp.

    Same semantics as ``torch.nn.functional.scaled_dot_product_attention(q, k, v,
    is_causal=causal, scale=scale, enable_gqa=True)``, plus the masking arguments below
    (semantics in ``reference.attention``). A key takes part only if it passes every mask given;
    a query row that sees no key gets out 0, lse -inf and zero gradients.

    Args:
        q: (B, Hq, Nq, D). k, v: (B, Hkv, Nk, D) with Hq % Hkv == 0 (GQA / MQA).
            Any strides with the last one equal to 1 (other inputs are copied once).
        causal: top-left aligned causal mask: query i sees key j iff j <= i.
        scale: score scale, default 1 / sqrt(D).
        backend: backend name (see ``available_backends()``); None applies ``use_backend``,
            then ``FLASHDUO_BACKEND``, then the default.
        rope: a ``CosSinTable`` to rotate q and k with the 2D axial RoPE of ViTs before attention
            (semantics in ``reference.rope``); Nq and Nk must equal num_prefix_tokens + the
            table's grid size. Gradients flow back through the rotation to the unrotated q, k.
        num_prefix_tokens: leading tokens (CLS, registers) left unrotated; only used with rope.
        deterministic: True makes the backward bit-identical from run to run; False lets a
            backend with a faster non-deterministic backward (fp32 atomics for dq) use it. None
            reads ``FLASHDUO_DETERMINISTIC`` (0 / false turns it off), default True. Today only
            ``cuda`` on Hopper has such a backward, at D = 64 and 128; everywhere else it is
            deterministic either way (``Backend.deterministic_modes``).
        attn_mask: as SDPA's, broadcastable to (B, Hq, Nq, Nk) on q's device: bool (True: the key
            takes part) or floating (added to the scaled scores); no gradient flows to it.
        window: (left, right): query i sees key j iff i - left <= j <= i + right, top-left
            aligned like ``causal`` (which is (-1, 0)); -1 is unbounded, so (-1, -1) is no window.
        softcap: c > 0 turns each scaled score s into c * tanh(s / c) before masking.
            The masking arguments run on the backends whose ``Backend.masks`` name them (today
            ``reference``); others refuse them with a ``ValueError`` naming the argument.

    Under ``torch.autocast`` on q's device, float32 q, k, v run in the autocast dtype (as SDPA
    does): out comes back in that dtype and the gradients in float32.

    Returns:
        out: (B, Hq, Nq, D), q's dtype. Differentiable with respect to q, k, v.
        lse: (B, Hq, Nq) float32, natural log of the softmax denominator of each row (no gradient).
    """
    scale = check_inputs(q, k, v, causal, scale, rope, num_prefix_tokens, deterministic)
    attn_mask, window, softcap = check_masks(q, k, attn_mask, window, softcap)
    if window == (-1, -1):
        window = None
    deterministic = registry.resolve_deterministic(deterministic)
    q, k, v = _autocast(q, k, v)
    name = registry.resolve_backend(backend)
    tables = (None, None, 0) if rope is None else (rope.COSP, rope.SINP, num_prefix_tokens)
    q, k, v = last_dim_contiguous(q), last_dim_contiguous(k), last_dim_contiguous(v)
    out, lse = ops.attention(q, k, v, causal, scale, name, *tables, deterministic, attn_mask,
                             window, softcap)
    return out, lse.detach()


def _autocast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Under ``torch.autocast`` for q's device, float32 inputs run in the autocast dtype, as SDPA
    does; gradients flow back to the float32 tensors through the cast."""
    device = q.device.type
    if q.dtype == torch.float32 and torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        return q.to(dtype), k.to(dtype), v.to(dtype)
    return q, k, v


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    backend: str | None = None,
    rope: reference.CosSinTable | None = None,
    num_prefix_tokens: int = 1,
    deterministic: bool | None = None,
    *,
    attn_mask: torch.Tensor | None = None,
    window: tuple[int, int] | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention, (B, Hq, Nq, D) -> (B, Hq, Nq, D); see ``attention_with_lse``."""
    return attention_with_lse(q, k, v, causal, scale, backend, rope, num_prefix_tokens,
                              deterministic, attn_mask=attn_mask, window=window,
                              softcap=softcap)[0]
