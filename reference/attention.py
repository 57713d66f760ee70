"""Reference scaled dot-product attention: forward with log-sum-exp, explicit backward, naive baseline.

Semantics (shared by every backend):

* scores ``S = scale * q @ k^T`` with ``scale = 1 / sqrt(D)`` unless given;
* ``softcap`` c > 0: ``S`` becomes ``c * tanh(S / c)`` before masking;
* ``attn_mask``, as SDPA's, broadcastable to (B, Hq, Nq, Nk): bool (True = the key takes part) or
  float (added to the scores);
* causal masking is top-left aligned, as in SDPA: query ``i`` sees key ``j`` iff ``j <= i``;
* ``window=(left, right)``: query ``i`` sees key ``j`` iff ``i - left <= j <= i + right``, top-left
  aligned like causal (which is ``(-1, 0)``), -1 unbounded; a key must pass every mask given;
* GQA / MQA: query head ``h`` reads key/value head ``h // (Hq // Hkv)``;
* ``lse[b, h, i] = log(sum_j exp(S[b, h, i, j]))`` over visible keys, natural log, float32;
* ``out = softmax(S) @ v``; a row that sees no key gets out 0, lse -inf and zero gradients
  (FlexAttention's convention), never NaN.
"""

from __future__ import annotations

import math

import torch


def causal_mask(nq: int, nk: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (Nq, Nk) mask, True where query i may see key j (j <= i, top-left aligned)."""
    rows = torch.arange(nq, device=device)[:, None]
    cols = torch.arange(nk, device=device)[None, :]
    return cols <= rows


def _expand_kv(x: torch.Tensor, hq: int) -> torch.Tensor:
    """(B, Hkv, N, D) -> (B, Hq, N, D) by repeating each key/value head Hq // Hkv times."""
    return x.repeat_interleave(hq // x.shape[1], dim=1)


Window = tuple[int, int]


def key_visibility(nq: int, nk: int, causal: bool = False, window: Window | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor | None:
    """Boolean (Nq, Nk): True where query i may see key j under ``causal`` and ``window`` (both
    top-left aligned); None when neither restricts anything."""
    if not causal and (window is None or window == (-1, -1)):
        return None
    rows = torch.arange(nq, device=device)[:, None]
    cols = torch.arange(nk, device=device)[None, :]
    keep = cols <= rows if causal else torch.ones(nq, nk, dtype=torch.bool, device=device)
    if window is not None:
        left, right = window
        if left >= 0:
            keep = keep & (cols >= rows - left)
        if right >= 0:
            keep = keep & (cols <= rows + right)
    return keep


def _raw_scores(q: torch.Tensor, k: torch.Tensor, scale: float | None) -> torch.Tensor:
    """``scale * q @ k^T`` (B, Hq, Nq, Nk) with the K/V heads expanded for GQA."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.matmul(q, _expand_kv(k, q.shape[1]).transpose(-2, -1)) * scale


def _masked(s: torch.Tensor, causal: bool, attn_mask: torch.Tensor | None,
            window: Window | None) -> torch.Tensor:
    """Scores after ``attn_mask`` (bool: False -> -inf; float: added), causal and window."""
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            s = s.masked_fill(~attn_mask, float("-inf"))
        else:
            s = s + attn_mask.to(s.dtype)
    keep = key_visibility(s.shape[-2], s.shape[-1], causal, window, s.device)
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    return s


def _scores(
    q: torch.Tensor, k: torch.Tensor, causal: bool, scale: float | None,
    attn_mask: torch.Tensor | None = None, window: Window | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Masked score matrix (B, Hq, Nq, Nk), softcapped when ``softcap``; masked entries -inf."""
    s = _raw_scores(q, k, scale)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    return _masked(s, causal, attn_mask, window)


def _probs(s: torch.Tensor) -> torch.Tensor:
    """softmax over the keys, 0 in rows with no visible key (where softmax gives NaN)."""
    empty = torch.isneginf(s).all(dim=-1, keepdim=True)
    return torch.softmax(s.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    upcast: bool = True,
    *,
    attn_mask: torch.Tensor | None = None,
    window: Window | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention forward by materializing the scores.

    Args:
        q: (B, Hq, Nq, D). k, v: (B, Hkv, Nk, D), Hq % Hkv == 0.
        causal: top-left aligned causal mask.
        scale: score scale, default 1 / sqrt(D).
        upcast: compute in float64 (the ground truth) when True; in the input dtype otherwise
            (PyTorch's own rounding error, the baseline the tests' tolerances are measured from).
        attn_mask: bool or float, broadcastable to (B, Hq, Nq, Nk) (module docstring).
        window: (left, right) key band around each query, -1 unbounded.
        softcap: c > 0 bounds the scores to (-c, c) by c * tanh(S / c).

    Returns:
        out: (B, Hq, Nq, D) in float64 when ``upcast`` else in q's dtype; 0 in rows that see no
            key.
        lse: (B, Hq, Nq) natural-log log-sum-exp of the scaled, masked scores; float64 when
            ``upcast``, float32 otherwise; -inf in rows that see no key.
    """
    if upcast:
        q, k, v = q.double(), k.double(), v.double()
    s = _scores(q, k, causal, scale, attn_mask, window, softcap)
    lse = torch.logsumexp(s.float() if not upcast else s, dim=-1)
    out = torch.matmul(_probs(s), _expand_kv(v, q.shape[1]))
    return out, lse


def attention_bwd_ref(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    *,
    attn_mask: torch.Tensor | None = None,
    window: Window | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Explicit attention backward in float64, the formulas the flash kernels implement.

    With ``P = softmax(S)`` and ``delta_i = sum_d dO[i, d] * O[i, d]``:
    ``dV = P^T dO``, ``dP = dO V^T``, ``dS = P * (dP - delta)``, ``dQ = scale dS K``,
    ``dK = scale dS^T Q``; GQA gradients are summed over the query heads sharing a K/V head.
    With ``softcap``, dS is taken through the cap: times ``1 - tanh(S_raw / c)^2``. Rows that see
    no key have P = 0, so they add nothing to any gradient. The masks are as in
    :func:`attention_ref` (a float ``attn_mask`` gets no gradient).

    Args:
        dout: (B, Hq, Nq, D). q: (B, Hq, Nq, D). k, v: (B, Hkv, Nk, D).

    Returns:
        dq (B, Hq, Nq, D), dk (B, Hkv, Nk, D), dv (B, Hkv, Nk, D), float64.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    dout, q, k, v = dout.double(), q.double(), k.double(), v.double()
    hq, hkv = q.shape[1], k.shape[1]
    raw = _raw_scores(q, k, scale)
    capped = raw if softcap is None else softcap * torch.tanh(raw / softcap)
    p = _probs(_masked(capped, causal, attn_mask, window))
    ke, ve = _expand_kv(k, hq), _expand_kv(v, hq)
    out = torch.matmul(p, ve)
    delta = (dout * out).sum(-1, keepdim=True)
    dp = torch.matmul(dout, ve.transpose(-2, -1))
    ds = p * (dp - delta)
    if softcap is not None:
        ds = ds * (1 - torch.tanh(raw / softcap) ** 2)
    dq = torch.matmul(ds, ke) * scale
    dk = torch.matmul(ds.transpose(-2, -1), q) * scale
    dv = torch.matmul(p.transpose(-2, -1), dout)

    def fold(x: torch.Tensor) -> torch.Tensor:
        b, _, n, d = x.shape
        return x.view(b, hkv, hq // hkv, n, d).sum(2)

    return dq, fold(dk), fold(dv)


def attention_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Textbook attention in the input dtype: ``softmax(scale * q k^T) v``, differentiable by autograd.

    This is the "naive PyTorch" row of the benchmark: it writes the (B, Hq, Nq, Nk) score and
    probability matrices to memory. Shapes as in :func:`attention_ref`.
    """
    p = torch.softmax(_scores(q, k, causal, scale).float(), dim=-1).to(q.dtype)
    return torch.matmul(p, _expand_kv(v, q.shape[1]))
