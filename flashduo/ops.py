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

import importlib.util

import torch
from torch.autograd import forward_ad

import reference
from flashduo import registry

_LIB = torch.library.Library("flashduo", "DEF")  # noqa: TOR901 (kept alive for the process)
# rope_cos / rope_sin: float32 (N_pos, D / 2) tables of the 2D RoPE (reference.rope), or None;
# num_prefix: leading tokens left unrotated; deterministic: the backward's mode (fwd carries it to
# its autograd context). fwd returns (out, lse, q_rot, k_rot): q_rot, k_rot are the rotated q, k
# the kernels attended with when the op layer rotated them (rope tables given, a backend without
# fused_rope), saved for the backward in place of q, k; empty otherwise. bwd's rotated: q and k
# are such rotated tensors (dq, dk still come back for the unrotated ones). attn_mask, window,
# softcap: the masking arguments (registry.MASKS), None where the call has none; attn_mask gets
# no gradient.
_LIB.define(
    "fwd(Tensor q, Tensor k, Tensor v, bool causal, float scale, str backend, "
    "Tensor? rope_cos=None, Tensor? rope_sin=None, int num_prefix=0, bool deterministic=True, "
    "Tensor? attn_mask=None, int[]? window=None, float? softcap=None) "
    "-> (Tensor, Tensor, Tensor, Tensor)"
)
_LIB.define(
    "bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, bool causal, "
    "float scale, str backend, Tensor? rope_cos=None, Tensor? rope_sin=None, int num_prefix=0, "
    "bool deterministic=True, bool rotated=False, Tensor? attn_mask=None, int[]? window=None, "
    "float? softcap=None) -> (Tensor, Tensor, Tensor)"
)


def _masks(attn_mask, window, softcap) -> dict:
    """The masking arguments a call has, as the keywords a backend's fwd / bwd take."""
    given = {"attn_mask": attn_mask, "window": None if window is None else tuple(window),
             "softcap": softcap}
    return {name: value for name, value in given.items() if value is not None}


def _empty_case(q: torch.Tensor, k: torch.Tensor) -> bool:
    return q.numel() == 0 or k.shape[2] == 0


def _rope(cos, sin, num_prefix):
    return None if cos is None else (cos, sin, num_prefix)


def _rotates(impl: registry.Backend, rope_cos: torch.Tensor | None) -> bool:
    """Whether the op layer rotates q, k for this backend (and the backward gets them rotated)."""
    return rope_cos is not None and not impl.fused_rope


def _rotate_qk(impl: registry.Backend, q: torch.Tensor, k: torch.Tensor, rope):
    if impl.rotate is not None:
        return impl.rotate(q, k, rope)
    return (reference.rotate_pairs(q, *rope).contiguous(),
            reference.rotate_pairs(k, *rope).contiguous())


def _new_out(q: torch.Tensor, impl: registry.Backend) -> torch.Tensor:
    """An uninitialized out in the layout ``impl`` returns: contiguous (B, H, N, D), or with
    ``bnhd_out`` the memory of (B, N, H, D), SDPA's."""
    if impl.bnhd_out:
        b, h, n, d = q.shape
        return q.new_empty((b, n, h, d)).transpose(1, 2)
    return q.new_empty(q.shape)


def _in_layout(out: torch.Tensor, impl: registry.Backend) -> torch.Tensor:
    """out itself when it already has ``_new_out``'s strides (no allocation), else a copy."""
    b, h, n, d = out.shape
    strides = (n * h * d, d, h * d, 1) if impl.bnhd_out else (h * n * d, n * d, d, 1)
    return out if out.stride() == strides else _new_out(out, impl).copy_(out)


def _fwd_impl(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float, backend: str,
    rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
    num_prefix: int = 0, deterministic: bool = True, attn_mask: torch.Tensor | None = None,
    window: list[int] | None = None, softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """out (B, Hq, Nq, D) like q, lse float32 (B, Hq, Nq), q_rot, k_rot (see the schema's note);
    q (B, Hq, Nq, D), k/v (B, Hkv, Nk, D); attn_mask broadcastable to (B, Hq, Nq, Nk).

    The forward is deterministic in every backend; ``deterministic`` is the backward's mode. With
    rope tables, backends with ``fused_rope`` get them; others get q, k rotated here (by the
    backend's ``rotate`` where it has one). out is contiguous, or in (B, N, H, D) memory for
    backends with ``bnhd_out``. The backend's refusals are raised here, once per call (see
    ``flashduo._validate``).
    """
    out, lse, qr, kr = _fwd_run(q, k, v, causal, scale, backend, rope_cos, rope_sin, num_prefix,
                                deterministic, attn_mask, window, softcap)
    if qr is None:
        qr, kr = _no_rotation(q)
    return out, lse, qr, kr


def _fwd_run(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float, backend: str,
    rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
    num_prefix: int = 0, deterministic: bool = True, attn_mask: torch.Tensor | None = None,
    window: list[int] | None = None, softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``_fwd_impl`` with None for q_rot and k_rot where the op layer rotated nothing (the
    schema's empty placeholders are made only where the op returns them)."""
    impl = registry.get_backend(backend)
    masks = _masks(attn_mask, window, softcap)
    impl.check(q, k, v, causal, frozenset(masks))
    rope = _rope(rope_cos, rope_sin, num_prefix)
    rotates = _rotates(impl, rope_cos)
    if _empty_case(q, k):
        out = _new_out(q, impl).zero_()
        lse = torch.full(q.shape[:3], float("-inf"), dtype=torch.float32, device=q.device)
        qr, kr = (q.new_zeros(q.shape), k.new_zeros(k.shape)) if rotates else (None, None)
        return out, lse, qr, kr
    qr = kr = None
    if rope is None:
        out, lse = impl.fwd(q, k, v, causal, scale, **masks)
    elif impl.fused_rope:
        out, lse = impl.fwd(q, k, v, causal, scale, rope=rope, **masks)
    else:
        qr, kr = _rotate_qk(impl, q, k, rope)
        out, lse = impl.fwd(qr, kr, v, causal, scale, **masks)
    return _in_layout(out, impl), lse.contiguous(), qr, kr


def _no_rotation(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return q.new_empty(0), q.new_empty(0)


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
    rotated: bool = False,
    attn_mask: torch.Tensor | None = None,
    window: list[int] | None = None,
    softcap: float | None = None,
    packed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq (B, Hq, Nq, D), dk and dv (B, Hkv, Nk, D) from dout (B, Hq, Nq, D) and saved tensors.

    With rope, q and k are the unrotated inputs, or with ``rotated`` the rotated ones; dq, dk are
    returned for the unrotated inputs either way (turned back by the backend when it
    ``unrotates_grads``). ``deterministic`` reaches backends with ``deterministic_modes`` only.
    ``packed`` (a Python-level argument, not in the op's schema): a (B, N, 3, H, D) tensor
    (Hq == Hkv, Nq == Nk) that receives dq, dk, dv in its slices 0, 1, 2, written there by
    backends with ``packed_grads`` and copied there for the others; its ``unpacked`` views are
    returned.
    """
    if _empty_case(q, k):
        if packed is not None:
            return unpacked(packed.zero_())
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    impl = registry.get_backend(backend)
    mode = {"deterministic": deterministic} if impl.deterministic_modes else {}
    mode.update(_masks(attn_mask, window, softcap))
    rope = _rope(rope_cos, rope_sin, num_prefix)
    # the backend writes the packed gradient itself unless the op layer turns dq, dk afterwards
    written = packed is not None and impl.packed_grads and (
        rope is None or impl.fused_rope and not rotated or impl.unrotates_grads)
    if written:
        mode["packed"] = packed
    if rope is None:
        dq, dk, dv = impl.bwd(dout, q, k, v, out, lse, causal, scale, **mode)
    elif impl.fused_rope and not rotated:
        dq, dk, dv = impl.bwd(dout, q, k, v, out, lse, causal, scale, rope=rope, **mode)
    else:
        if not rotated:
            q, k = _rotate_qk(impl, q, k, rope)
        if impl.unrotates_grads:
            dq, dk, dv = impl.bwd(dout, q, k, v, out, lse, causal, scale, rope=rope, **mode)
        else:
            dq, dk, dv = impl.bwd(dout, q, k, v, out, lse, causal, scale, **mode)
            dq = reference.rotate_pairs(dq, *rope, inverse=True)
            dk = reference.rotate_pairs(dk, *rope, inverse=True)
    if packed is None:
        return dq.contiguous(), dk.contiguous(), dv.contiguous()
    if written:
        return dq, dk, dv
    views = unpacked(packed)
    for into, got in zip(views, (dq, dk, dv)):
        into.copy_(got)
    return views


for _key in ("CPU", "CUDA"):
    _LIB.impl("fwd", _fwd_impl, _key)
    _LIB.impl("bwd", _bwd_impl, _key)


@torch.library.register_fake("flashduo::fwd")
def _fwd_fake(q, k, v, causal, scale, backend, rope_cos=None, rope_sin=None, num_prefix=0,
              deterministic=True, attn_mask=None, window=None, softcap=None):
    impl = registry.get_backend(backend)
    if _rotates(impl, rope_cos):
        qr, kr = q.new_empty(q.shape), k.new_empty(k.shape)
    else:
        qr, kr = _no_rotation(q)
    return _new_out(q, impl), q.new_empty(q.shape[:3], dtype=torch.float32), qr, kr


@torch.library.register_fake("flashduo::bwd")
def _bwd_fake(dout, q, k, v, out, lse, causal, scale, backend, rope_cos=None, rope_sin=None,
              num_prefix=0, deterministic=True, rotated=False, attn_mask=None, window=None,
              softcap=None):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _save(ctx, inputs, output, traced: bool = False) -> None:
    """Keep what the backward needs: q, k, or the rotated q, k the op layer made. ``traced``: the
    forward ran ``flashduo::triton_fwd``, so the backward runs ``flashduo::triton_bwd``."""
    q, k, v, causal, scale, backend, rope_cos, rope_sin, num_prefix, deterministic = inputs[:10]
    attn_mask, window, softcap = (*inputs[10:], None, None, None)[:3]
    out, lse, qr, kr = output
    ctx.rotated = _rotates(registry.get_backend(backend), rope_cos)
    if ctx.rotated:
        q, k = qr, kr
    ctx.save_for_backward(q, k, v, out, lse, rope_cos, rope_sin, attn_mask)
    ctx.causal, ctx.scale, ctx.backend, ctx.num_prefix = causal, scale, backend, num_prefix
    ctx.deterministic, ctx.traced = deterministic, traced
    ctx.window, ctx.softcap = window, softcap


def _setup_context(ctx, inputs, output) -> None:
    _save(ctx, inputs, output)
    ctx.mark_non_differentiable(*output[1:])


def _plain_eager(t: torch.Tensor) -> bool:
    """Whether a call on ``t`` may run an op's implementation directly, without the dispatcher: a
    plain tensor (not a fake or functional one of a trace), outside ``torch.compile`` and with no
    torch function or dispatch mode active (a mode sees the ops as usual)."""
    return (t.__class__ is torch.Tensor and not torch.compiler.is_compiling()
            and not torch._C._is_torch_function_mode_enabled()
            and torch._C._len_torch_dispatch_stack() == 0)


def keep_grads_unmaterialized(ctx) -> None:
    """Let autograd pass None for an output that gets no gradient instead of a zero-filled tensor
    (lse never gets one: without this, an lse-sized float32 allocation and fill before every
    backward). Eager only: a traced backward keeps the materialized zeros the graph expects."""
    if not torch.compiler.is_compiling():
        ctx.set_materialize_grads(False)


def _gradients(ctx, dout: torch.Tensor | None, packed: bool = False):
    """dq, dk, dv of a saved forward; with ``packed``, one (B, N, 3, H, D) tensor holding them
    (``unpacked`` views), written in place where the path allows it. A None dout (see
    ``keep_grads_unmaterialized``) is read as zeros."""
    q, k, v, out, lse, rope_cos, rope_sin, attn_mask = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    args = (ctx.causal, ctx.scale, rope_cos, rope_sin, ctx.num_prefix, ctx.deterministic,
            ctx.rotated)
    masks = (attn_mask, ctx.window, ctx.softcap)
    if ctx.traced:
        if packed:
            return torch.ops.flashduo.triton_bwd_packed(dout, q, k, v, out, lse, *args)
        return torch.ops.flashduo.triton_bwd(dout, q, k, v, out, lse, *args)
    if _plain_eager(dout):
        dqkv = _new_packed(q) if packed else None
        grads = _bwd_impl(dout, q, k, v, out, lse, *args[:2], ctx.backend, *args[2:], *masks,
                          packed=dqkv)
        return grads if dqkv is None else dqkv
    grads = attention_bwd(dout, q, k, v, out, lse, *args[:2], ctx.backend, *args[2:], *masks)
    return torch.stack([g.transpose(1, 2) for g in grads], dim=2) if packed else grads


def _new_packed(q: torch.Tensor) -> torch.Tensor:
    """An uninitialized (B, N, 3, H, D) tensor for q (B, H, N, D)."""
    b, h, n, d = q.shape
    return q.new_empty((b, n, 3, h, d))


def unpacked(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (B, H, N, D) views q, k, v of a packed (B, N, 3, H, D) tensor."""
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    return q, k, v


def _backward(ctx, dout, *_):
    dq, dk, dv = _gradients(ctx, dout)
    return (dq, dk, dv) + (None,) * (len(ctx.needs_input_grad) - 3)


torch.library.register_autograd("flashduo::fwd", _backward, setup_context=_setup_context)

attention_fwd = torch.ops.flashduo.fwd
attention_bwd = torch.ops.flashduo.bwd


_TRITON_OPS = set()  # {"triton"} where triton_fwd / triton_bwd are registered


def _register_triton_ops() -> None:
    """``flashduo::triton_fwd`` and ``flashduo::triton_bwd``: the ``triton`` backend's fwd and bwd
    as ``torch.library.triton_op``s, whose Triton launches ``torch.compile`` records
    (``triton_impl._traced``) so that Inductor launches the kernels from its own generated code.
    Same arguments as ``flashduo::fwd`` / ``bwd`` without ``backend``; used inside
    ``torch.compile`` only (eager calls take the plain ops and their direct launches)."""
    from triton_impl import _traced

    @torch.library.triton_op("flashduo::triton_fwd", mutates_args=())
    def triton_fwd(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
        rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
        num_prefix: int = 0, deterministic: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        with _traced.recording():
            return _fwd_impl(q, k, v, causal, scale, "triton", rope_cos, rope_sin, num_prefix,
                             deterministic)

    @torch.library.triton_op("flashduo::triton_bwd_packed", mutates_args=())
    def triton_bwd_packed(
        dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        out: torch.Tensor, lse: torch.Tensor, causal: bool, scale: float,
        rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
        num_prefix: int = 0, deterministic: bool = True, rotated: bool = False,
    ) -> torch.Tensor:
        """``triton_bwd``'s gradients as one (B, N, 3, H, D) tensor (Hq == Hkv, Nq == Nk),
        written there by the kernels: the gradient of a packed qkv without a stack."""
        dqkv = _new_packed(q)
        with _traced.recording():
            _bwd_impl(dout, q, k, v, out, lse, causal, scale, "triton", rope_cos, rope_sin,
                      num_prefix, deterministic, rotated, packed=dqkv)
        return dqkv

    @torch.library.triton_op("flashduo::triton_bwd", mutates_args=())
    def triton_bwd(
        dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        out: torch.Tensor, lse: torch.Tensor, causal: bool, scale: float,
        rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
        num_prefix: int = 0, deterministic: bool = True, rotated: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with _traced.recording():
            return _bwd_impl(dout, q, k, v, out, lse, causal, scale, "triton", rope_cos, rope_sin,
                             num_prefix, deterministic, rotated)

    def setup_context(ctx, inputs, output) -> None:
        _save(ctx, (*inputs[:5], "triton", *inputs[5:]), output, traced=True)
        ctx.mark_non_differentiable(*output[1:])

    triton_fwd.register_autograd(_backward, setup_context=setup_context)
    _TRITON_OPS.add("triton")


# Registering imports triton, so only where the ops can run: a CUDA GPU, not the interpreter
# (which must be switched on before triton is first imported).
if (importlib.util.find_spec("triton") is not None and not registry.triton_interpreting()
        and torch.cuda.is_available()):
    _register_triton_ops()


def _forward(ctx, args: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``flashduo::fwd``'s arguments ``args`` the way the front door does (see
    ``_Attention``) and save what the backward needs in ``ctx``; return (out, lse)."""
    q, k, v, causal, scale, backend, rope_cos, rope_sin, num_prefix, deterministic = args[:10]
    # the triton ops take no masks: a masked call runs (and is refused by) the plain op
    traced = (backend in _TRITON_OPS and torch.compiler.is_compiling()
              and all(m is None for m in args[10:]))
    if traced:
        output = torch.ops.flashduo.triton_fwd(q, k, v, causal, scale, rope_cos, rope_sin,
                                               num_prefix, deterministic)
    elif _plain_eager(q):
        output = _fwd_run(*args)
    else:
        output = attention_fwd(*args)
    _save(ctx, args, output, traced)
    ctx.mark_non_differentiable(output[1])
    keep_grads_unmaterialized(ctx)
    return output[:2]


class _Attention(torch.autograd.Function):
    """The front door's autograd node: the same two ops, without torch.library's per-call Python
    wrapper and its schema-driven argument handling (measured in docs/perf-notes.md); in plain
    eager calls their implementations directly, without the dispatcher (``_plain_eager``); inside
    ``torch.compile``, the ``triton`` backend's triton ops instead.
    The ops keep their own autograd registration for callers that use them directly."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, backend, rope_cos, rope_sin, num_prefix,
                deterministic, attn_mask, window, softcap):
        return _forward(ctx, (q, k, v, causal, scale, backend, rope_cos, rope_sin, num_prefix,
                              deterministic, attn_mask, window, softcap))

    @staticmethod
    def backward(ctx, dout, dlse):
        return _backward(ctx, dout, dlse)


class _PackedAttention(torch.autograd.Function):
    """``_Attention`` on q, k, v given as one packed (B, N, 3, H, D) tensor: the backward returns
    the packed gradient, written in place by backends with ``packed_grads`` (and by the traced
    ``flashduo::triton_bwd_packed``) instead of stacked from three tensors."""

    @staticmethod
    def forward(ctx, qkv, causal, scale, backend, rope_cos, rope_sin, num_prefix,
                deterministic, attn_mask, window, softcap):
        return _forward(ctx, (*unpacked(qkv), causal, scale, backend, rope_cos, rope_sin,
                              num_prefix, deterministic, attn_mask, window, softcap))

    @staticmethod
    def backward(ctx, dout, dlse):
        return (_gradients(ctx, dout, packed=True),) + (None,) * (len(ctx.needs_input_grad) - 1)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float, backend: str,
    rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
    num_prefix: int = 0, deterministic: bool = True, attn_mask: torch.Tensor | None = None,
    window: list[int] | None = None, softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out (B, Hq, Nq, D), lse (B, Hq, Nq) float32 through ``flashduo::fwd``, differentiable in
    q, k, v with ``flashduo::bwd`` as the backward (see ``_fwd_impl`` for the shapes and out's
    memory layout); the masking arguments as in ``registry.Backend``."""
    args = (causal, scale, backend, rope_cos, rope_sin, num_prefix, deterministic, attn_mask,
            window, softcap)
    if _untracked(q, k, v):
        return _fwd_run(q, k, v, *args)[:2]
    q, k, v = _distinct(q, k, v)
    return _Attention.apply(q, k, v, *args)


def attention_qkvpacked(
    qkv: torch.Tensor, causal: bool, scale: float, backend: str,
    rope_cos: torch.Tensor | None = None, rope_sin: torch.Tensor | None = None,
    num_prefix: int = 0, deterministic: bool = True, attn_mask: torch.Tensor | None = None,
    window: list[int] | None = None, softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``attention`` on the (B, H, N, D) views of a packed qkv (B, N, 3, H, D): out (B, H, N, D),
    lse (B, H, N), differentiable in qkv."""
    args = (causal, scale, backend, rope_cos, rope_sin, num_prefix, deterministic, attn_mask,
            window, softcap)
    if _untracked(qkv):
        return _fwd_run(*unpacked(qkv), *args)[:2]
    return _PackedAttention.apply(qkv, *args)


def _untracked(*tensors: torch.Tensor) -> bool:
    """Whether a call on ``tensors`` records no autograd graph (grad mode off, or no tensor that
    requires grad), runs plain eager (``_plain_eager``) and outside forward-mode AD and functorch
    transforms (which the ``autograd.Function`` refuses by name rather than dropping tangents):
    it then calls the forward itself, without the node (microseconds of host time a call)."""
    return ((not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors))
            and forward_ad._current_level < 0 and not torch._C._are_functorch_transforms_active()
            and _plain_eager(tensors[0]))


def _distinct(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors, each one that repeats an earlier one replaced by a view of it: Dynamo cannot
    trace an ``autograd.Function`` given one tensor twice (``attention(x, x, x)``, or one
    ``cu_seqlens`` for q and k)."""
    out: list[torch.Tensor] = []
    for t in tensors:
        out.append(t.view(t.shape) if any(t is u for u in out) else t)
    return out
