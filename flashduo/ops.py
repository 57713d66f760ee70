"""The torch.library operators: one autograd registration for every backend.

``flashduo::fwd`` and ``flashduo::bwd`` dispatch to the backend named by their ``backend``
argument. They are plain dispatcher ops (``torch.library.Library.define`` + ``impl``) with fake
implementations and ``register_autograd``, so ``torch.compile`` treats each as one graph node (no
graph breaks, whatever the backend does inside) while eager calls stay cheap: the dispatcher calls
the implementation directly, without ``custom_op``'s extra Python layers (their cost shows at
small problem sizes; docs/perf-notes.md, v1). The front door calls them through
``attention``, a plain ``autograd.Function`` that shares ``_setup_context`` and ``_backward`` with
the registration (one backward, without torch.library's per-call autograd wrapper).
"""

from __future__ import annotations

import torch

import reference
from flashduo import registry

_LIB = torch.library.Library("flashduo", "DEF")  # noqa: TOR901 (kept alive for the process)
# rope_cos / rope_sin: float32 (N_pos, D / 2) tables of the 2D RoPE (reference.rope), or None;
# num_prefix: leading tokens left unrotated; deterministic: the backward's mode (fwd carries it to
# its autograd context).
_LIB.define(
    "fwd(Tensor q, Tensor k, Tensor v, bool causal, float scale, str backend, "
    "Tensor? rope_cos=None, Tensor? rope_sin=None, int num_prefix=0, bool deterministic=True) "
    "-> (Tensor, Tensor)"
)
_LIB.define(
    "bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, bool causal, "
    "float scale, str backend, Tensor? rope_cos=None, Tensor? rope_sin=None, int num_prefix=0, "
    "bool deterministic=True) -> (Tensor, Tensor, Tensor)"
)


def _empty_case(q: torch.Tensor, k: torch.Tensor) -> bool:
    return q.numel() == 0 or k.shape[2] == 0


def _rope(cos, sin, num_prefix):
    return None if cos is None else (cos, sin, num_prefix)


def _rotate(x: torch.Tensor, rope, inverse: bool = False) -> torch.Tensor:
    return reference.rotate_pairs(x, *rope, inverse=inverse)


def _fwd_impl(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float, backend: str,
    rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
    num_prefix: int = 0, deterministic: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out (B, Hq, Nq, D) like q, lse float32 (B, Hq, Nq); q (B, Hq, Nq, D), k/v (B, Hkv, Nk, D).

    The forward is deterministic in every backend; ``deterministic`` is the backward's mode. With
    rope tables, backends with ``fused_rope`` get them; others get q, k rotated here. The
    backend's refusals are raised here, once per call (see ``flashduo._validate``).
    """
    impl = registry.get_backend(backend)
    impl.check(q, k, v, causal)
    if _empty_case(q, k):
        out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.full(q.shape[:3], float("-inf"), dtype=torch.float32, device=q.device)
        return out, lse
    rope = _rope(rope_cos, rope_sin, num_prefix)
    if rope is None:
        out, lse = impl.fwd(q, k, v, causal, scale)
    elif impl.fused_rope:
        out, lse = impl.fwd(q, k, v, causal, scale, rope=rope)
    else:
        out, lse = impl.fwd(_rotate(q, rope), _rotate(k, rope), v, causal, scale)
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
    rope_cos: torch.Tensor | None = None,
    rope_sin: torch.Tensor | None = None,
    num_prefix: int = 0,
    deterministic: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq (B, Hq, Nq, D), dk and dv (B, Hkv, Nk, D) from dout (B, Hq, Nq, D) and saved tensors.

    With rope, q and k are the unrotated inputs and dq, dk are returned unrotated.
    ``deterministic`` reaches backends with ``deterministic_modes`` only.
    """
    if _empty_case(q, k):
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    impl = registry.get_backend(backend)
    mode = {"deterministic": deterministic} if impl.deterministic_modes else {}
    rope = _rope(rope_cos, rope_sin, num_prefix)
    if rope is None:
        dq, dk, dv = impl.bwd(dout, q, k, v, out, lse, causal, scale, **mode)
    elif impl.fused_rope:
        dq, dk, dv = impl.bwd(dout, q, k, v, out, lse, causal, scale, rope=rope, **mode)
    else:
        qr, kr = _rotate(q, rope), _rotate(k, rope)
        dq, dk, dv = impl.bwd(dout, qr, kr, v, out, lse, causal, scale, **mode)
        dq, dk = _rotate(dq, rope, inverse=True), _rotate(dk, rope, inverse=True)
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


for _key in ("CPU", "CUDA"):
    _LIB.impl("fwd", _fwd_impl, _key)
    _LIB.impl("bwd", _bwd_impl, _key)


@torch.library.register_fake("flashduo::fwd")
def _fwd_fake(q, k, v, causal, scale, backend, rope_cos=None, rope_sin=None, num_prefix=0,
              deterministic=True):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.register_fake("flashduo::bwd")
def _bwd_fake(dout, q, k, v, out, lse, causal, scale, backend, rope_cos=None, rope_sin=None,
              num_prefix=0, deterministic=True):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, scale, backend, rope_cos, rope_sin, num_prefix, deterministic = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, rope_cos, rope_sin)
    ctx.causal, ctx.scale, ctx.backend, ctx.num_prefix = causal, scale, backend, num_prefix
    ctx.deterministic = deterministic


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, rope_cos, rope_sin = ctx.saved_tensors
    dq, dk, dv = attention_bwd(dout, q, k, v, out, lse, ctx.causal, ctx.scale, ctx.backend,
                               rope_cos, rope_sin, ctx.num_prefix, ctx.deterministic)
    return dq, dk, dv, None, None, None, None, None, None, None


torch.library.register_autograd("flashduo::fwd", _backward, setup_context=_setup_context)

attention_fwd = torch.ops.flashduo.fwd
attention_bwd = torch.ops.flashduo.bwd


class _Attention(torch.autograd.Function):
    """The front door's autograd node: the same two ops, without torch.library's per-call Python
    wrapper and its schema-driven argument handling (measured in docs/perf-notes.md).
    The ops keep their own autograd registration for callers that use them directly."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, backend, rope_cos, rope_sin, num_prefix,
                deterministic):
        args = (q, k, v, causal, scale, backend, rope_cos, rope_sin, num_prefix, deterministic)
        out, lse = attention_fwd(*args)
        _setup_context(ctx, args, (out, lse))
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        return _backward(ctx, dout, dlse)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float, backend: str,
    rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
    num_prefix: int = 0, deterministic: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out (B, Hq, Nq, D), lse (B, Hq, Nq) float32 through ``flashduo::fwd``, differentiable in
    q, k, v with ``flashduo::bwd`` as the backward (see ``_fwd_impl`` for the shapes)."""
    return _Attention.apply(q, k, v, causal, scale, backend, rope_cos, rope_sin, num_prefix,
                            deterministic)
