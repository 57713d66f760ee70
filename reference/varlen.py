"""Packed variable-length attention (FlashAttention's varlen layout), defined sequence by sequence.

q is (total_q, Hq, D), k and v (total_k, Hkv, D): sequence i holds rows
``cu_seqlens_q[i] : cu_seqlens_q[i + 1]`` of q and ``cu_seqlens_k[i] : cu_seqlens_k[i + 1]`` of k
and v, and attends only within itself, with the semantics of :func:`reference.attention_ref`
(causal and window top-left aligned per sequence, softcap, GQA). ``cu_seqlens_*`` are int32
(batch + 1,), start at 0, never decrease and end at the totals; nothing here checks that.
"""

from __future__ import annotations

import torch

from reference.attention import Window, attention_bwd_ref, attention_ref


def _spans(cu: torch.Tensor) -> list[tuple[int, int]]:
    bounds = cu.tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def _heads_first(x: torch.Tensor) -> torch.Tensor:
    """(n, H, D) rows of one sequence -> (1, H, n, D)."""
    return x.transpose(0, 1).unsqueeze(0)


def attention_varlen_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
    causal: bool = False, scale: float | None = None, upcast: bool = True, *,
    window: Window | None = None, softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out (total_q, Hq, D) and lse (Hq, total_q) of packed sequences; float64 when ``upcast``
    (lse float32 otherwise), as :func:`reference.attention_ref` per sequence. A sequence with no
    keys gives out 0 and lse -inf."""
    outs, lses = [], []
    for (q0, q1), (k0, k1) in zip(_spans(cu_seqlens_q), _spans(cu_seqlens_k)):
        out, lse = attention_ref(_heads_first(q[q0:q1]), _heads_first(k[k0:k1]),
                                 _heads_first(v[k0:k1]), causal, scale, upcast,
                                 window=window, softcap=softcap)
        outs.append(out[0].transpose(0, 1))
        lses.append(lse[0])
    return torch.cat(outs), torch.cat(lses, dim=-1)


def attention_varlen_bwd_ref(
    dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
    causal: bool = False, scale: float | None = None, *,
    window: Window | None = None, softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq (total_q, Hq, D), dk and dv (total_k, Hkv, D) in float64, sequence by sequence
    (:func:`reference.attention_bwd_ref`)."""
    dq, dk, dv = (torch.zeros(x.shape, dtype=torch.float64, device=x.device) for x in (q, k, v))
    for (q0, q1), (k0, k1) in zip(_spans(cu_seqlens_q), _spans(cu_seqlens_k)):
        grads = attention_bwd_ref(_heads_first(dout[q0:q1]), _heads_first(q[q0:q1]),
                                  _heads_first(k[k0:k1]), _heads_first(v[k0:k1]), causal, scale,
                                  window=window, softcap=softcap)
        for whole, (lo, hi), g in zip((dq, dk, dv), ((q0, q1), (k0, k1), (k0, k1)), grads):
            whole[lo:hi] = g[0].transpose(0, 1)
    return dq, dk, dv
