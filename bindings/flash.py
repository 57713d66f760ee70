"""The CUDA FlashAttention kernels on torch tensors: the extension's own argument checks, raised
as ``ValueError`` from Python, then its launch on the current CUDA stream.

``fwd(q, k, v, causal, scale) -> (out, lse)``: q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D), float16
or bfloat16 CUDA tensors with last-dim stride 1, D in {64, 128}, Hq % Hkv == 0; out (B, Hq, Nq, D)
contiguous, lse float32 (B, Hq, Nq) in natural log.
``bwd(dout, q, k, v, out, lse, causal, scale) -> (dq, dk, dv)``, contiguous, shaped like q, k, v.
Both take ``rope=(cos, sin, num_prefix)`` (float32 contiguous (N_pos, D / 2) tables of the 2D
RoPE, ``reference.rope``): q and k are rotated inside the kernels; dq and dk come back unrotated.
"""

from __future__ import annotations

import torch

from bindings import loader

Rope = tuple[torch.Tensor, torch.Tensor, int]


def _rope_args(ext, q: torch.Tensor, k: torch.Tensor, rope: Rope | None, what: str) -> tuple:
    cos, sin, prefix = rope if rope is not None else (None, None, 0)
    if cos is not None and sin is not None:  # the kernels read the tables 16 bytes at a time
        cos, sin = (t if t.data_ptr() % 16 == 0 else t.clone() for t in (cos, sin))
    why = ext.rope_problem(q, k, cos, sin, int(prefix))
    if why:
        raise ValueError(f"cuda {what}: {why}")
    return cos, sin, int(prefix)


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """t, or a contiguous copy when its rows do not start on 16-byte boundaries (the kernels move
    rows 16 bytes at a time)."""
    if t.stride(-1) != 1:  # refused by the checks, with the argument's name
        return t
    ok = t.data_ptr() % 16 == 0 and all(s % 8 == 0 for s in t.stride()[:-1])
    return t if ok else t.clone(memory_format=torch.contiguous_format)


def fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
        rope: Rope | None = None):
    """Forward: (out, lse); ``ValueError`` naming the argument for inputs the kernels refuse."""
    ext = loader.load()
    q, k, v = (_aligned(t) for t in (q, k, v))
    why = ext.fwd_problem(q, k, v, float(scale))
    if why:
        raise ValueError(f"cuda fwd: {why}")
    return ext.fwd(q, k, v, bool(causal), float(scale), *_rope_args(ext, q, k, rope, "fwd"))


def bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        out: torch.Tensor, lse: torch.Tensor, causal: bool, scale: float,
        rope: Rope | None = None):
    """Backward: (dq, dk, dv); ``ValueError`` naming the argument for inputs the kernels refuse."""
    ext = loader.load()
    dout, q, k, v, out = (_aligned(t) for t in (dout, q, k, v, out))
    why = ext.bwd_problem(dout, q, k, v, out, lse, float(scale))
    if why:
        raise ValueError(f"cuda bwd: {why}")
    return ext.bwd(dout, q, k, v, out, lse, bool(causal), float(scale),
                   *_rope_args(ext, q, k, rope, "bwd"))
