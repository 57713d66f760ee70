"""The front door's validation: the one place a call's arguments are checked, with messages that
name the argument.

A call is checked twice, for two different things, and each once: ``check_inputs`` (here, called
by ``flashduo.api`` before the backend is chosen) for the arguments themselves, then the chosen
backend's ``Backend.check`` (its ``not_supported_reasons``) when the ``flashduo::fwd`` op runs
(``flashduo.ops``), so that ``torch.compile`` traces none of the backend's probing. Backends trust
what arrives; the CUDA extension's own guards only protect callers that bypass the front door.
``check_masks`` and ``check_varlen`` check the masking (``attn_mask``, ``window``, ``softcap``) and
packed-sequence arguments of the semantics in ``reference.attention`` and ``reference.varlen``.
"""

from __future__ import annotations

import math

import torch

import reference
from flashduo._memo import PerTensor


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
    _check_deterministic(deterministic)
    if rope is not None:
        reference.check_rope(q, rope, num_prefix_tokens, "q")
        reference.check_rope(k, rope, num_prefix_tokens, "k")
    return _scale(scale, q.shape[-1])


def check_qkvpacked(qkv: object) -> None:
    """Validate the packed tensor of ``attention_qkvpacked``: a floating (B, N, 3, H, D) tensor
    (its q, k, v views then go through ``check_inputs``)."""
    if not isinstance(qkv, torch.Tensor):
        raise TypeError(f"qkv must be a torch.Tensor, got {type(qkv).__name__}")
    if qkv.dim() != 5 or qkv.shape[2] != 3:
        raise ValueError(f"qkv must be 5-D (B, N, 3, H, D), got shape {tuple(qkv.shape)}")
    if not qkv.is_floating_point():
        raise TypeError(f"qkv must be a floating-point tensor, got dtype {qkv.dtype}")


def _check_deterministic(deterministic: object) -> None:
    if deterministic is not None and not isinstance(deterministic, bool):
        raise TypeError(f"deterministic must be a bool or None, got {type(deterministic).__name__}")


def _scale(scale: object, d: int) -> float:
    """The effective score scale: 1 / sqrt(D) for None, else ``scale`` checked."""
    if scale is None:
        return 1.0 / math.sqrt(d) if d > 0 else 1.0
    if not _is_real(scale):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    return float(scale)


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_masks(
    q: torch.Tensor, k: torch.Tensor, attn_mask: object = None, window: object = None,
    softcap: object = None,
) -> tuple[torch.Tensor | None, reference.Window | None, float | None]:
    """Validate the masking arguments of a call on q (B, Hq, Nq, D), k (B, Hkv, Nk, D) that
    ``check_inputs`` accepted, with the semantics of ``reference.attention``; return them
    normalized: attn_mask as given, window as a tuple of two ints, softcap as a float.

    attn_mask: bool or floating tensor on q's device, broadcastable to (B, Hq, Nq, Nk).
    window: (left, right) ints >= -1 (-1 unbounded). softcap: a positive finite number.
    Raises TypeError for a wrong kind of argument, ValueError for a wrong value.
    """
    if attn_mask is not None:
        _check_attn_mask(attn_mask, (q.shape[0], q.shape[1], q.shape[2], k.shape[2]), q.device)
    if window is not None:
        if (not isinstance(window, (tuple, list)) or len(window) != 2
                or not all(isinstance(w, int) and not isinstance(w, bool) for w in window)):
            raise TypeError(f"window must be a pair of ints (left, right) or None, got {window!r}")
        if min(window) < -1:
            raise ValueError(f"window entries must be >= -1 (-1: unbounded), got {tuple(window)}")
        window = (window[0], window[1])
    if softcap is not None:
        if not _is_real(softcap):
            raise TypeError(f"softcap must be a float or None, got {type(softcap).__name__}")
        if not math.isfinite(softcap) or softcap <= 0:
            raise ValueError(f"softcap must be a positive finite number, got {softcap}")
        softcap = float(softcap)
    return attn_mask, window, softcap


def _check_attn_mask(mask: object, target: tuple[int, int, int, int],
                     device: torch.device) -> None:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"attn_mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"attn_mask must be bool (True: the key takes part) or floating (added to "
                        f"the scores), got dtype {mask.dtype}")
    if mask.device != device:
        raise ValueError(f"attn_mask must be on q's device {device}, got {mask.device}")
    shape = tuple(mask.shape)
    if len(shape) > 4 or any(m not in (1, t) for m, t in zip(reversed(shape), reversed(target))):
        raise ValueError(f"attn_mask of shape {shape} does not broadcast to (B, Hq, Nq, Nk) = "
                         f"{target}")


def check_varlen(
    q: object, k: object, v: object, cu_seqlens_q: object, cu_seqlens_k: object,
    max_seqlen_q: object, max_seqlen_k: object, causal: object, scale: object,
    deterministic: object = None,
) -> float:
    """Validate a packed call: q (total_q, Hq, D), k and v (total_k, Hkv, D), ``cu_seqlens_*``
    int32 (batch + 1,) on q's device, starting at 0, never decreasing and ending at the totals,
    ``max_seqlen_*`` ints at least the longest sequence; return the effective scale.

    The values of ``cu_seqlens_*`` are read on the host (one small copy from the GPU, once per
    tensor and version: ``cu_bounds``), except while ``torch.compile`` traces the call. Raises
    TypeError / ValueError naming the argument.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must be 3-D (total, H, D), got {t.dim()}-D tensor of shape "
                             f"{tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got q={q.dtype}, k={k.dtype}, v={v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got q={q.device}, k={k.device}, "
                         f"v={v.device}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k={tuple(k.shape)}, "
                         f"v={tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same head dim, got q D={q.shape[-1]}, "
                         f"k D={k.shape[-1]}")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        raise ValueError(f"q heads must be a multiple of k/v heads (GQA), got Hq={q.shape[1]}, "
                         f"Hkv={k.shape[1]}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    _check_deterministic(deterministic)
    sides = (("q", cu_seqlens_q, q.shape[0], max_seqlen_q),
             ("k", cu_seqlens_k, k.shape[0], max_seqlen_k))
    for side, cu, _, longest in sides:
        _check_cu_seqlens_kind(f"cu_seqlens_{side}", cu, q.device, f"max_seqlen_{side}", longest)
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k must have the same length (batch + 1), "
                         f"got {cu_seqlens_q.numel()} and {cu_seqlens_k.numel()}")
    if not torch.compiler.is_compiling():
        for side, cu, total, longest in sides:
            _check_cu_seqlens_values(f"cu_seqlens_{side}", cu_bounds(cu), total,
                                     f"max_seqlen_{side}", longest)
    return _scale(scale, q.shape[-1])


_CU_BOUNDS = PerTensor(limit=64)


def cu_bounds(cu: torch.Tensor) -> list[int]:
    """The values of a ``cu_seqlens`` tensor as a list, read on the host once per tensor and
    version (``PerTensor``): reading a GPU tensor waits for all the work queued before it, and the
    blocks of a model usually pass one ``cu_seqlens`` to every layer. Any in-place change (which
    bumps the tensor's version counter) makes it read again."""
    return _CU_BOUNDS.get(cu, torch.Tensor.tolist)


def _check_cu_seqlens_kind(name: str, cu: object, device: torch.device, max_name: str,
                           longest: object) -> None:
    if not isinstance(cu, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(cu).__name__}")
    if cu.dtype != torch.int32:
        raise TypeError(f"{name} must be int32, got dtype {cu.dtype}")
    if cu.dim() != 1 or cu.numel() < 2:
        raise ValueError(f"{name} must be 1-D of length batch + 1 >= 2, got shape "
                         f"{tuple(cu.shape)}")
    if cu.device != device:
        raise ValueError(f"{name} must be on q's device {device}, got {cu.device}")
    if not isinstance(longest, int) or isinstance(longest, bool):
        raise TypeError(f"{max_name} must be an int, got {type(longest).__name__}")


def _check_cu_seqlens_values(name: str, bounds: list[int], total: int, max_name: str,
                             longest: int) -> None:
    lens = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    if bounds[0] != 0:
        raise ValueError(f"{name} must start at 0, got {bounds[0]}")
    if min(lens) < 0:
        i = next(i for i, n in enumerate(lens) if n < 0)
        raise ValueError(f"{name} must never decrease, got {bounds[i]} then {bounds[i + 1]} at "
                         f"index {i}")
    if bounds[-1] != total:
        raise ValueError(f"{name} must end at the number of rows ({total}), got {bounds[-1]}")
    if longest < max(lens):
        raise ValueError(f"{max_name}={longest} is smaller than the longest sequence "
                         f"({max(lens)})")


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """Return t itself when its last dim has stride 1 (other strides are free), else one copy."""
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()
