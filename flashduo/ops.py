"""The torch.library operators: one autograd registration for every backend.

``flashduo::fwd`` and ``flashduo::bwd`` dispatch to the backend named by their ``backend``
argument. They are plain dispatcher ops (``torch.library.Library.define`` + ``impl``) with fake
implementations and ``register_autograd``, so ``torch.compile`` treats each as one graph node (no
graph breaks, whatever the backend does inside) while eager calls stay cheap: the dispatcher calls
the implementation directly, without ``custom_op``'s extra Python layers (about 40% less
per-call overhead, which shows at small problem sizes).
"""

from __future__ import annotations

import torch

from flashduo import registry

_LIB = torch.library.Library("flashduo", "DEF")  # noqa: TOR901 (kept alive for the process)
_LIB.define(
    "fwd(Tensor q, Tensor k, Tensor v, bool causal, float scale, str backend) -> (Tensor, Tensor)"
)
_LIB.define(
    "bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, bool causal, "
    "float scale, str backend) -> (Tensor, Tensor, Tensor)"
)


def _empty_case(q: torch.Tensor, k: torch.Tensor) -> bool:
    return q.numel() == 0 or k.shape[2] == 0


def _fwd_impl(
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


def _bwd_impl(
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


for _key in ("CPU", "CUDA"):
    _LIB.impl("fwd", _fwd_impl, _key)
    _LIB.impl("bwd", _bwd_impl, _key)


@torch.library.register_fake("flashduo::fwd")
def _fwd_fake(q, k, v, causal, scale, backend):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.register_fake("flashduo::bwd")
def _bwd_fake(dout, q, k, v, out, lse, causal, scale, backend):
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


torch.library.register_autograd("flashduo::fwd", _backward, setup_context=_setup_context)

attention_fwd = torch.ops.flashduo.fwd
attention_bwd = torch.ops.flashduo.bwd
