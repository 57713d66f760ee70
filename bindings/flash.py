"""The CUDA FlashAttention kernels on torch tensors: the extension's own argument checks, raised
as ``ValueError`` from Python, then its launch on the current CUDA stream.

``fwd(q, k, v, causal, scale) -> (out, lse)``: q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D), float16
or bfloat16 CUDA tensors with last-dim stride 1, D in {64, 128}, Hq % Hkv == 0; out (B, Hq, Nq, D)
contiguous, lse float32 (B, Hq, Nq) in natural log.
``bwd(dout, q, k, v, out, lse, causal, scale) -> (dq, dk, dv)``, contiguous, shaped like q, k, v.
"""

from __future__ import annotations

import torch

from bindings import loader


def fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float):
    """Forward: (out, lse); ``ValueError`` naming the argument for inputs the kernels refuse."""
    ext = loader.load()
    why = ext.fwd_problem(q, k, v, float(scale))
    if why:
        raise ValueError(f"cuda fwd: {why}")
    return ext.fwd(q, k, v, bool(causal), float(scale))


def bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        out: torch.Tensor, lse: torch.Tensor, causal: bool, scale: float):
    """Backward: (dq, dk, dv); ``ValueError`` naming the argument for inputs the kernels refuse."""
    ext = loader.load()
    why = ext.bwd_problem(dout, q, k, v, out, lse, float(scale))
    if why:
        raise ValueError(f"cuda bwd: {why}")
    return ext.bwd(dout, q, k, v, out, lse, bool(causal), float(scale))
