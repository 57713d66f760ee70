"""The torch.library operators: one autograd registration for every backend.

``flashduo::fwd`` and ``flashduo::bwd`` dispatch to the backend named by their ``backend``
argument. Because they are custom ops with fake (meta) implementations, ``torch.compile`` treats
them as single graph nodes: no graph breaks, whatever the backend does inside.
"""

from __future__ import annotations

import torch

from flashduo import registry


def _empty_case(q: torch.Tensor, k: torch.Tensor) -> bool:
    return q.numel() == 0 or k.shape[2] == 0


@torch.library.custom_op("flashduo::fwd", mutates_args=())
def attention_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """out (B, Hq, Nq, D) like q, lse float32 (B, Hq, Nq); q (B, Hq, Nq, D), k/v (B, Hkv, Nk, D)."""
    impl = registry.get_backend(backend)
    impl.check(q, k, v, causal)
    if _empty_case(q, k):
        out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.full(q.shape[:3], float("-inf"), dtype=torch.float32, device=q.device)
        return out, lse
    out, lse = impl.fwd(q, k, v, causal, scale)
    return out.contiguous(), lse.contiguous()


@attention_fwd.register_fake
def _(q, k, v, causal, scale, backend):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("flashduo::bwd", mutates_args=())
def attention_bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    causal: bool,
    scale: float,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq (B, Hq, Nq, D), dk and dv (B, Hkv, Nk, D) from dout (B, Hq, Nq, D) and saved tensors."""
    if _empty_case(q, k):
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    dq, dk, dv = registry.get_backend(backend).bwd(dout, q, k, v, out, lse, causal, scale)
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


@attention_bwd.register_fake
def _(dout, q, k, v, out, lse, causal, scale, backend):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, scale, backend = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.causal, ctx.scale, ctx.backend = causal, scale, backend


def _backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = attention_bwd(dout, q, k, v, out, lse, ctx.causal, ctx.scale, ctx.backend)
    return dq, dk, dv, None, None, None


attention_fwd.register_autograd(_backward, setup_context=_setup_context)
