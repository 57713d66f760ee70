"""Reference scaled dot-product attention: forward with log-sum-exp, explicit backward, naive baseline.

Semantics (shared by every backend):

* scores ``S = scale * q @ k^T`` with ``scale = 1 / sqrt(D)`` unless given;
* causal masking is top-left aligned, as in SDPA: query ``i`` sees key ``j`` iff ``j <= i``;
* GQA / MQA: query head ``h`` reads key/value head ``h // (Hq // Hkv)``;
* ``lse[b, h, i] = log(sum_j exp(S[b, h, i, j]))`` over visible keys, natural log, float32;
* ``out = softmax(S) @ v``.
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


def _scores(
    q: torch.Tensor, k: torch.Tensor, causal: bool, scale: float | None
) -> torch.Tensor:
    """Masked score matrix (B, Hq, Nq, Nk); masked entries are -inf."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(q, _expand_kv(k, q.shape[1]).transpose(-2, -1)) * scale
    if causal:
        s = s.masked_fill(~causal_mask(q.shape[2], k.shape[2], q.device), float("-inf"))
    return s


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    upcast: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention forward by materializing the scores.

    Args:
        q: (B, Hq, Nq, D). k, v: (B, Hkv, Nk, D), Hq % Hkv == 0.
        causal: top-left aligned causal mask.
        scale: score scale, default 1 / sqrt(D).
        upcast: compute in float64 (the ground truth) when True; in the input dtype otherwise
            (PyTorch's own rounding error, the baseline the tests' tolerances are measured from).

    Returns:
        out: (B, Hq, Nq, D) in float64 when ``upcast`` else in q's dtype.
        lse: (B, Hq, Nq) natural-log log-sum-exp of the scaled, masked scores; float64 when
            ``upcast``, float32 otherwise. Rows with no visible key (only when Nk == 0) get -inf.
    """
    if upcast:
        q, k, v = q.double(), k.double(), v.double()
    s = _scores(q, k, causal, scale)
    lse = torch.logsumexp(s.float() if not upcast else s, dim=-1)
    p = torch.softmax(s, dim=-1)
    if k.shape[2] == 0:
        p = torch.zeros_like(p)
    out = torch.matmul(p, _expand_kv(v, q.shape[1]))
    return out, lse


def attention_bwd_ref(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Explicit attention backward in float64, the formulas the flash kernels implement.

    With ``P = softmax(S)`` and ``delta_i = sum_d dO[i, d] * O[i, d]``:
    ``dV = P^T dO``, ``dP = dO V^T``, ``dS = P * (dP - delta)``, ``dQ = scale dS K``,
    ``dK = scale dS^T Q``; GQA gradients are summed over the query heads sharing a K/V head.

    Args:
        dout: (B, Hq, Nq, D). q: (B, Hq, Nq, D). k, v: (B, Hkv, Nk, D).

    Returns:
        dq (B, Hq, Nq, D), dk (B, Hkv, Nk, D), dv (B, Hkv, Nk, D), float64.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    dout, q, k, v = dout.double(), q.double(), k.double(), v.double()
    hq, hkv = q.shape[1], k.shape[1]
    p = torch.softmax(_scores(q, k, causal, scale), dim=-1)
    if k.shape[2] == 0:
        p = torch.zeros_like(p)
    ke, ve = _expand_kv(k, hq), _expand_kv(v, hq)
    out = torch.matmul(p, ve)
    delta = (dout * out).sum(-1, keepdim=True)
    dp = torch.matmul(dout, ve.transpose(-2, -1))
    ds = p * (dp - delta)
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
