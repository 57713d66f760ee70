"""The front door's validation: the one place a call's arguments are checked, with messages that
name the argument.

A call is checked twice, for two different things, and each once: ``check_inputs`` (here, called
by ``flashduo.api`` before the backend is chosen) for the arguments themselves, then the chosen
backend's ``Backend.check`` (its ``not_supported_reasons``) when the ``flashduo::fwd`` op runs
(``flashduo.ops``), so that ``torch.compile`` traces none of the backend's probing. Backends trust
what arrives; the CUDA extension's own guards only protect callers that bypass the front door.
"""

from __future__ import annotations

import math

import torch

import reference


def check_inputs(
    q: object, k: object, v: object, causal: object, scale: object,
    rope: object = None, num_prefix_tokens: object = 1, deterministic: object = None,
) -> float:
    """Validate q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D), and a RoPE table for q and k when
    ``rope`` is given; return the effective scale.

    Raises TypeError for a wrong kind of argument (not a tensor, integer dtype, mixed dtypes, a
    rope that is not a ``CosSinTable``, a deterministic that is neither a bool nor None) and
    ValueError for a wrong value (rank, shapes, head counts, devices, scale, a table for another
    grid, head dim or device).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must be 4-D (B, H, N, D), got {t.dim()}-D tensor of shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got q={q.dtype}, k={k.dtype}, v={v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(
            f"q, k, v must be on one device, got q={q.device}, k={k.device}, v={v.device}"
        )
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k={tuple(k.shape)}, v={tuple(v.shape)}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q and k must have the same batch size, got q B={q.shape[0]}, k B={k.shape[0]}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same head dim, got q D={q.shape[-1]}, k D={k.shape[-1]}"
        )
    hq, hkv = q.shape[1], k.shape[1]
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(
            f"q heads must be a multiple of k/v heads (GQA), got Hq={hq}, Hkv={hkv}"
        )
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if deterministic is not None and not isinstance(deterministic, bool):
        raise TypeError(f"deterministic must be a bool or None, got {type(deterministic).__name__}")
    if rope is not None:
        reference.check_rope(q, rope, num_prefix_tokens, "q")
        reference.check_rope(k, rope, num_prefix_tokens, "k")
    if scale is None:
        return 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    return float(scale)


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """Return t itself when its last dim has stride 1 (other strides are free), else one copy."""
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()
