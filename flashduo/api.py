"""Public entry points: ``attention``, ``attention_with_lse``, ``attention_qkvpacked`` and
``attention_varlen``."""

from __future__ import annotations

import torch

import reference
from flashduo import ops, registry, varlen_ops
from flashduo._validate import (
    check_inputs,
    check_masks,
    check_qkvpacked,
    check_varlen,
    cu_bounds,
    last_dim_contiguous,
)


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
            ``reference`` and ``triton``); others refuse them with a ``ValueError`` naming the
            argument.

    Under ``torch.autocast`` on q's device, float32 q, k, v run in the autocast dtype (as SDPA
    does): out comes back in that dtype and the gradients in float32.

    Returns:
        out: (B, Hq, Nq, D), q's dtype. Differentiable with respect to q, k, v.
        lse: (B, Hq, Nq) float32, natural log of the softmax denominator of each row (no gradient).
    """
    options = _options(q, k, v, causal, scale, backend, rope, num_prefix_tokens, deterministic,
                       attn_mask, window, softcap)
    q, k, v = _autocast(q, k, v)
    q, k, v = last_dim_contiguous(q), last_dim_contiguous(k), last_dim_contiguous(v)
    out, lse = ops.attention(q, k, v, *options)
    return out, lse.detach()


def _options(q, k, v, causal, scale, backend, rope, num_prefix_tokens, deterministic, attn_mask,
             window, softcap) -> tuple:
    """Validate a call (``check_inputs``, ``check_masks``) and resolve its defaults: the op
    arguments after q, k, v (``ops.attention``'s order)."""
    scale = check_inputs(q, k, v, causal, scale, rope, num_prefix_tokens, deterministic)
    attn_mask, window, softcap = check_masks(q, k, attn_mask, window, softcap)
    if window == (-1, -1):
        window = None
    deterministic = registry.resolve_deterministic(deterministic)
    name = registry.resolve_backend(backend)
    tables = (None, None, 0) if rope is None else (rope.COSP, rope.SINP, num_prefix_tokens)
    return (causal, scale, name, *tables, deterministic, attn_mask, window, softcap)


def _autocast(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Under ``torch.autocast`` for the first tensor's device, float32 inputs run in the autocast
    dtype, as SDPA does; gradients flow back to the float32 tensors through the cast."""
    device = tensors[0].device.type
    if tensors[0].dtype == torch.float32 and torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        return [t.to(dtype) for t in tensors]
    return list(tensors)


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


def attention_qkvpacked(
    qkv: torch.Tensor,
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
    """Self-attention on q, k, v packed in one tensor, the output of a fused qkv projection
    (FlashAttention's ``flash_attn_qkvpacked_func``): ``attention`` on ``qkv[:, :, i]``
    seen as (B, H, N, D), with every argument as there.

    The gradient comes back as one (B, N, 3, H, D) tensor; backends with ``Backend.packed_grads``
    (``triton``) write dq, dk and dv into it, so no stack of three gradients follows the
    backward (a copy of 3 B N H D elements each way at every call of a ViT block).

    Args:
        qkv: (B, N, 3, H, D), any strides with the last one equal to 1, e.g.
            ``linear(x).view(B, N, 3, H, D)``.

    Returns:
        out: (B, N, H, D), qkv's dtype (a view of (B, H, N, D) attention output, contiguous for
        backends whose output has SDPA's layout), so ``out.reshape(B, N, H * D)`` is the input
        of the output projection. Differentiable with respect to qkv.
    """
    check_qkvpacked(qkv)
    q, k, v = ops.unpacked(qkv)
    options = _options(q, k, v, causal, scale, backend, rope, num_prefix_tokens, deterministic,
                       attn_mask, window, softcap)
    (qkv,) = _autocast(qkv)
    out, _ = ops.attention_qkvpacked(last_dim_contiguous(qkv), *options)
    return out.transpose(1, 2)


def attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    causal: bool = False,
    scale: float | None = None,
    backend: str | None = None,
    rope: reference.CosSinTable | None = None,
    *,
    window: tuple[int, int] | None = None,
    softcap: float | None = None,
    deterministic: bool | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention over packed sequences of different lengths (FlashAttention's varlen layout):
    each sequence attends only within itself, with ``attention``'s semantics per sequence
    (``reference.varlen``).

    Args:
        q: (total_q, Hq, D); k, v: (total_k, Hkv, D), Hq % Hkv == 0; sequence i holds rows
            ``cu_seqlens_q[i] : cu_seqlens_q[i + 1]`` of q and the same of ``cu_seqlens_k`` in
            k and v. Last-dim stride 1 (other inputs are copied once).
        cu_seqlens_q, cu_seqlens_k: int32 (batch + 1,) on q's device, from 0, never decreasing,
            ending at total_q / total_k. Their values are read on the host (one small copy,
            once per tensor and version: a model's layers may share one cu_seqlens).
        max_seqlen_q, max_seqlen_k: ints at least the longest sequence of each.
        causal, window, softcap: as in ``attention``, top-left aligned within each sequence.
        rope: a ``CosSinTable.for_grids`` table of the packed images (NaViT-style native
            resolution), one grid per sequence, its ``seq_lens`` those of cu_seqlens_q and
            cu_seqlens_k (self-attention over the same tokens); each image's prefix tokens stay
            unrotated. Gradients flow back through the rotation.
        deterministic: as in ``attention``.
        return_lse: also return lse (Hq, total_q) float32, natural log (no gradient).

    Runs on the backends with ``Backend.fwd_varlen`` (today ``reference`` and ``triton``); others
    refuse the call with a ``ValueError``.

    Returns:
        out (total_q, Hq, D) in q's dtype, or (out, lse) with ``return_lse``.
    """
    scale = check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                         causal, scale, deterministic)
    _, window, softcap = check_masks(q, k, None, window, softcap)
    if window == (-1, -1):
        window = None
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse must be a bool, got {type(return_lse).__name__}")
    tables = (None, None)
    if rope is not None:
        if not torch.compiler.is_compiling():
            for name, x, cu in (("q", q, cu_seqlens_q), ("k", k, cu_seqlens_k)):
                bounds = cu_bounds(cu)
                reference.check_packed_rope(x, rope, [b - a for a, b in zip(bounds, bounds[1:])],
                                            name)
        tables = (rope.COSP, rope.SINP)
    deterministic = registry.resolve_deterministic(deterministic)
    name = registry.resolve_backend(backend)
    q, k, v = last_dim_contiguous(q), last_dim_contiguous(k), last_dim_contiguous(v)
    out, lse = varlen_ops.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                           max_seqlen_k, causal, scale, name, *tables,
                                           deterministic, window, softcap)
    return (out, lse.detach()) if return_lse else out
