"""The torch.library operators of packed sequences: ``flashduo::fwd_varlen`` and
``flashduo::bwd_varlen``, with fake implementations and one autograd registration, dispatching to
the backend named by their ``backend`` argument (``Backend.fwd_varlen`` / ``bwd_varlen``).

q is (total_q, Hq, D), k and v (total_k, Hkv, D); sequence i holds rows
``cu_seqlens_q[i] : cu_seqlens_q[i + 1]`` of q and ``cu_seqlens_k[i] : cu_seqlens_k[i + 1]`` of k
and v (``reference.varlen``). With RoPE tables (a ``CosSinTable.for_grids`` table's float32
(total, D / 2) rows, prefix rows the identity) the op layer rotates q and k before the backend and
saves the rotated tensors for the backward, which turns dq, dk back: with the backend's
``rotate`` and, where it ``unrotates_grads``, inside its backward (``bwd_varlen``'s ``rope=``),
else with PyTorch ops.
"""

from __future__ import annotations

import torch

import reference
from flashduo import registry
from flashduo.ops import _LIB, _distinct, _masks, _plain_eager, keep_grads_unmaterialized

# fwd_varlen returns (out, lse, q_rot, k_rot): q_rot, k_rot the rotated q, k when rope tables are
# given, empty otherwise; bwd_varlen's rotated: q and k are such rotated tensors.
_LIB.define(
    "fwd_varlen(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
    "int max_seqlen_q, int max_seqlen_k, bool causal, float scale, str backend, "
    "Tensor? rope_cos=None, Tensor? rope_sin=None, bool deterministic=True, int[]? window=None, "
    "float? softcap=None) -> (Tensor, Tensor, Tensor, Tensor)"
)
_LIB.define(
    "bwd_varlen(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
    "Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q, int max_seqlen_k, bool causal, "
    "float scale, str backend, Tensor? rope_cos=None, Tensor? rope_sin=None, "
    "bool deterministic=True, bool rotated=False, int[]? window=None, float? softcap=None) "
    "-> (Tensor, Tensor, Tensor)"
)


def _dense_view(x: torch.Tensor) -> torch.Tensor:
    """(total, H, D) -> (1, H, total, D), the view a backend's dense checks read."""
    return x.unsqueeze(0).transpose(1, 2)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
            inverse: bool = False) -> torch.Tensor:
    """x (total, H, D) turned by per-token tables (total, D / 2), contiguous."""
    turned = reference.rotate_pairs(x.transpose(0, 1), cos, sin, 0, inverse)
    return turned.transpose(0, 1).contiguous()


def _rotate_qk(impl: registry.Backend, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed q, k (total, H, D) turned by the per-token tables: by the backend's ``rotate`` on
    their (1, H, total, D) views where it has one (no prefix: the tables' prefix rows are the
    identity), else with PyTorch ops."""
    if impl.rotate is None:
        return _rotate(q, cos, sin), _rotate(k, cos, sin)
    qr, kr = impl.rotate(_dense_view(q), _dense_view(k), (cos, sin, 0))
    return qr[0].transpose(0, 1), kr[0].transpose(0, 1)


def _fwd_varlen_impl(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool, scale: float,
    backend: str, rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
    deterministic: bool = True, window: list[int] | None = None, softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """out (total_q, Hq, D) like q, lse (Hq, total_q) float32, q_rot, k_rot (see the schema's
    note). The backend's refusals are raised here, once per call."""
    impl = registry.get_backend(backend)
    masks = _masks(None, window, softcap)
    impl.check(_dense_view(q), _dense_view(k), _dense_view(v), causal, frozenset(masks), True)
    qr, kr = q.new_empty(0), k.new_empty(0)
    if rope_cos is not None:
        qr, kr = _rotate_qk(impl, q, k, rope_cos, rope_sin)
        q, k = qr, kr
    if q.numel() == 0 or k.shape[0] == 0:
        out = torch.zeros_like(q)
        lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), device=q.device)
    else:
        out, lse = impl.fwd_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                   max_seqlen_k, causal, scale, **masks)
    return out.contiguous(), lse.contiguous(), qr, kr


def _bwd_varlen_impl(
    dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor, max_seqlen_q: int,
    max_seqlen_k: int, causal: bool, scale: float, backend: str,
    rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
    deterministic: bool = True, rotated: bool = False, window: list[int] | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq (total_q, Hq, D), dk and dv (total_k, Hkv, D), for the unrotated q, k with rope."""
    if q.numel() == 0 or k.shape[0] == 0:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    impl = registry.get_backend(backend)
    if rope_cos is not None and not rotated:
        q, k = _rotate_qk(impl, q, k, rope_cos, rope_sin)
    masks = _masks(None, window, softcap)
    turns = rope_cos is not None and impl.unrotates_grads  # the backend turns dq, dk back
    if turns:
        masks["rope"] = (rope_cos, rope_sin)
    dq, dk, dv = impl.bwd_varlen(dout.contiguous(), q, k, v, out, lse, cu_seqlens_q,
                                 cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale, **masks)
    if rope_cos is not None and not turns:
        dq = _rotate(dq, rope_cos, rope_sin, inverse=True)
        dk = _rotate(dk, rope_cos, rope_sin, inverse=True)
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


for _key in ("CPU", "CUDA"):
    _LIB.impl("fwd_varlen", _fwd_varlen_impl, _key)
    _LIB.impl("bwd_varlen", _bwd_varlen_impl, _key)


@torch.library.register_fake("flashduo::fwd_varlen")
def _fwd_varlen_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
                     scale, backend, rope_cos=None, rope_sin=None, deterministic=True,
                     window=None, softcap=None):
    if rope_cos is None:
        qr, kr = q.new_empty(0), k.new_empty(0)
    else:
        qr, kr = q.new_empty(q.shape), k.new_empty(k.shape)
    lse = q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)
    return q.new_empty(q.shape), lse, qr, kr


@torch.library.register_fake("flashduo::bwd_varlen")
def _bwd_varlen_fake(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                     max_seqlen_k, causal, scale, backend, rope_cos=None, rope_sin=None,
                     deterministic=True, rotated=False, window=None, softcap=None):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _save(ctx, inputs, output) -> None:
    (q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, backend, rope_cos, rope_sin,
     deterministic, window, softcap) = inputs
    _, _, qr, kr = output
    ctx.rotated = rope_cos is not None
    if ctx.rotated:
        q, k = qr, kr
    ctx.save_for_backward(q, k, v, output[0], output[1], cu_q, cu_k, rope_cos, rope_sin)
    ctx.args = (max_q, max_k, causal, scale, backend)
    ctx.deterministic, ctx.window, ctx.softcap = deterministic, window, softcap


def _setup_context(ctx, inputs, output) -> None:
    _save(ctx, inputs, output)
    ctx.mark_non_differentiable(*output[1:])


def _backward(ctx, dout, *_):
    q, k, v, out, lse, cu_q, cu_k, rope_cos, rope_sin = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    args = (dout, q, k, v, out, lse, cu_q, cu_k, *ctx.args, rope_cos, rope_sin,
            ctx.deterministic, ctx.rotated, ctx.window, ctx.softcap)
    run = _bwd_varlen_impl if _plain_eager(dout) else torch.ops.flashduo.bwd_varlen
    dq, dk, dv = run(*args)
    return (dq, dk, dv) + (None,) * (len(ctx.needs_input_grad) - 3)


torch.library.register_autograd("flashduo::fwd_varlen", _backward, setup_context=_setup_context)


class _VarlenAttention(torch.autograd.Function):
    """The front door's autograd node for packed sequences: ``flashduo::fwd_varlen``, or in plain
    eager calls its implementation directly (as ``flashduo.ops._Attention`` does)."""

    @staticmethod
    def forward(ctx, *args):
        run = _fwd_varlen_impl if _plain_eager(args[0]) else torch.ops.flashduo.fwd_varlen
        output = run(*args)
        _save(ctx, args, output)
        ctx.mark_non_differentiable(output[1])
        keep_grads_unmaterialized(ctx)
        return output[:2]

    @staticmethod
    def backward(ctx, dout, dlse):
        return _backward(ctx, dout, dlse)


def attention_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool, scale: float,
    backend: str, rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
    deterministic: bool = True, window: list[int] | None = None, softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out (total_q, Hq, D), lse (Hq, total_q) float32 through ``flashduo::fwd_varlen``,
    differentiable in q, k, v with ``flashduo::bwd_varlen`` as the backward."""
    q, k, v, cu_seqlens_q, cu_seqlens_k = _distinct(q, k, v, cu_seqlens_q, cu_seqlens_k)
    return _VarlenAttention.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                  causal, scale, backend, rope_cos, rope_sin, deterministic,
                                  window, softcap)

