"""The CUDA FlashAttention kernels on torch tensors, launched on the current CUDA stream.

``fwd(q, k, v, causal, scale) -> (out, lse)``: q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D), float16
or bfloat16 CUDA tensors with last-dim stride 1, D in {64, 96, 128, 256} (96 and 256 on sm_90
only), Hq % Hkv == 0; out (B, Hq, Nq, D) contiguous, lse float32 (B, Hq, Nq) in natural log.
``bwd(dout, q, k, v, out, lse, causal, scale) -> (dq, dk, dv)``, contiguous, shaped like q, k, v;
``deterministic=False`` runs the Hopper backward's atomic mode at D = 64 and 128 (dq added with
fp32 atomics: run-to-run differences in the last bits); otherwise the backward is deterministic
either way.
Both take ``rope=(cos, sin, num_prefix)`` (``reference.RopeTables``: float32 contiguous
(N_pos, D / 2) tables of the 2D RoPE): q and k are rotated inside the kernels; dq and dk come back
unrotated.

Arguments arrive checked by flashduo's front door (``flashduo._validate``); nothing is checked
again here. The extension keeps its own guards for callers that skip the front door: they raise
``RuntimeError`` naming the argument.
"""

from __future__ import annotations

import torch

from bindings import loader
from reference import RopeTables


def _rope_args(rope: RopeTables | None) -> tuple:
    if rope is None:
        return None, None, 0
    cos, sin, prefix = rope  # the kernels read the tables 16 bytes at a time
    cos, sin = (t if t.data_ptr() % 16 == 0 else t.clone() for t in (cos, sin))
    return cos, sin, int(prefix)


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """t, or a contiguous copy when its rows do not start on 16-byte boundaries (the kernels move
    rows 16 bytes at a time)."""
    if t.stride(-1) != 1:  # refused by the extension's guards, with the argument's name
        return t
    ok = t.data_ptr() % 16 == 0 and all(s % 8 == 0 for s in t.stride()[:-1])
    return t if ok else t.clone(memory_format=torch.contiguous_format)


def fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
        rope: RopeTables | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward: (out, lse)."""
    q, k, v = (_aligned(t) for t in (q, k, v))
    return loader.load().fwd(q, k, v, bool(causal), float(scale), *_rope_args(rope))


def bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        out: torch.Tensor, lse: torch.Tensor, causal: bool, scale: float,
        rope: RopeTables | None = None,
        deterministic: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward: (dq, dk, dv)."""
    dout, q, k, v, out = (_aligned(t) for t in (dout, q, k, v, out))
    return loader.load().bwd(dout, q, k, v, out, lse, bool(causal), float(scale),
                             *_rope_args(rope), bool(deterministic))
