"""Backend registry: what each backend supports, and which one a call uses.

A backend is a pair of functions with one contract (see ``Backend``) plus the facts needed to
refuse inputs it cannot take with a readable reason. Selection, highest priority first: the
``backend=`` argument, ``with use_backend(name):``, the ``FLASHDUO_BACKEND`` environment variable,
then the default (``triton`` where a GPU or the Triton interpreter is present, else ``reference``).
The backward's mode: the ``deterministic=`` argument, else ``FLASHDUO_DETERMINISTIC``, else
deterministic.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from triton_impl._env import interpreting as triton_interpreting

FwdFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
BwdFn = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Backend:
    """One attention implementation and what it can take.

    ``fwd(q, k, v, causal, scale) -> (out, lse)`` with q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D),
    out like q, lse float32 (B, Hq, Nq) in natural log.
    ``bwd(dout, q, k, v, out, lse, causal, scale) -> (dq, dk, dv)`` shaped like q, k, v.
    Inputs arrive validated, non-empty and with last-dim stride 1; other strides are free.
    With ``deterministic_modes``, ``bwd`` also takes ``deterministic=``: False may choose a faster
    backward whose gradients can differ from run to run in the last bits (fp32 atomics); every
    other backend's backward is deterministic and is never handed the argument.
    With ``fused_rope``, both also take ``rope=(cos, sin, num_prefix_tokens)`` (float32
    (N_pos, D / 2) tables) and apply the 2D RoPE themselves, taking and returning unrotated q, k
    and dq, dk. Other backends are handed q, k rotated by the op layer, which saves them for the
    backward: with ``rotate(q, k, rope) -> (q_rot, k_rot)`` (contiguous) when the backend has one,
    else with PyTorch ops. With ``unrotates_grads``, ``bwd`` takes those rotated q, k with
    ``rope=`` and returns dq, dk for the unrotated inputs; otherwise the op layer turns them back.
    With ``bnhd_out``, ``fwd``'s out (B, H, N, D) has the memory layout of (B, N, H, D), as SDPA's
    does; otherwise it is contiguous.
    With ``packed_grads``, ``bwd`` also takes ``packed=``: a (B, N, 3, H, D) tensor (Hq == Hkv,
    Nq == Nk, last-dim stride 1) to write dq, dk, dv into, as its slices 0, 1, 2, returning
    their (B, H, N, D) views: the gradient of a packed qkv (``flashduo.attention_qkvpacked``)
    without a stack; for other backends the op layer copies the gradients there.
    ``fwd_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
    scale, **masks) -> (out, lse)`` and ``bwd_varlen(dout, q, k, v, out, lse, cu_seqlens_q,
    cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale, **masks) -> (dq, dk, dv)``, where a
    backend has them, run packed sequences (``flashduo.attention_varlen``): q (total_q, Hq, D),
    k, v (total_k, Hkv, D), out like q, lse (Hq, total_q) float32 (``reference.varlen``). With
    per-image RoPE the op layer rotates packed q, k (by ``rotate`` on their (1, H, total, D)
    views where the backend has one) and, where the backend ``unrotates_grads``, hands
    ``bwd_varlen`` ``rope=(cos, sin)``, per-token float32 (total, D / 2) tables, to turn dq, dk
    back itself.
    ``masks`` names the masking arguments of ``MASKS`` the backend takes; a call that has one
    hands it to both ``fwd`` and ``bwd`` as a keyword (``attn_mask=`` a bool or float tensor
    broadcastable to (B, Hq, Nq, Nk), ``window=(left, right)``, ``softcap=`` a float; semantics
    in ``reference.attention``), and only then.
    """

    name: str
    fwd: FwdFn
    bwd: BwdFn
    description: str
    dtypes: frozenset[torch.dtype]
    devices: Callable[[], frozenset[str]]
    head_dims: frozenset[int] | None = None
    min_capability: tuple[int, int] | None = None
    unavailable: Callable[[], str | None] = field(default=lambda: None)
    extra_reasons: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], list[str]] = field(
        default=lambda q, k, v, causal: []
    )
    fused_rope: bool = False
    deterministic_modes: bool = False
    rotate: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    unrotates_grads: bool = False
    bnhd_out: bool = False
    packed_grads: bool = False
    masks: frozenset[str] = frozenset()
    fwd_varlen: FwdFn | None = None
    bwd_varlen: BwdFn | None = None

    def not_supported_reasons(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
        masks: frozenset[str] = frozenset(), varlen: bool = False,
    ) -> list[str]:
        """Why this backend cannot run on these inputs (with the masking arguments ``masks``
        given; ``varlen``: packed sequences, q, k, v seen as (1, H, total, D)); empty when it
        can."""
        reasons = [_mask_reason(name) for name in MASKS if name in masks - self.masks]
        if varlen and self.fwd_varlen is None:
            takers = ", ".join(b.name for b in _REGISTRY.values() if b.fwd_varlen) or "none yet"
            reasons.append(f"packed sequences (attention_varlen) are not supported (backends "
                           f"that take them: {takers})")
        why = self.unavailable()
        if why:
            reasons.append(why)
        if q.dtype not in self.dtypes:
            names = ", ".join(sorted(str(d).removeprefix("torch.") for d in self.dtypes))
            reasons.append(f"dtype={str(q.dtype).removeprefix('torch.')} not in {{{names}}}")
        devices = self.devices()
        if q.device.type not in devices:
            reasons.append(f"device={q.device.type} not in {{{', '.join(sorted(devices))}}}")
        d = int(q.shape[-1])  # a symbolic int under tracing, which sets cannot hash
        if self.head_dims is not None and d not in self.head_dims:
            dims = ", ".join(str(x) for x in sorted(self.head_dims))
            reasons.append(f"head_dim={d} not in {{{dims}}}")
        if self.min_capability and q.device.type == "cuda":
            cap = device_capability(q.device.index)
            if cap < self.min_capability:
                reasons.append(f"compute capability {cap} < {self.min_capability}")
        return reasons + self.extra_reasons(q, k, v, causal)

    def check(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
              masks: frozenset[str] = frozenset(), varlen: bool = False) -> None:
        """Raise ``ValueError`` listing every reason this backend cannot take the inputs."""
        reasons = self.not_supported_reasons(q, k, v, causal, masks, varlen)
        if reasons:
            raise ValueError(f"backend {self.name!r} cannot run these inputs: " + "; ".join(reasons))


def device_capability(index: int | None) -> tuple[int, int]:
    """The compute capability of CUDA device ``index`` (None: the current one), asked once per
    device: microseconds a call otherwise."""
    return _capability(torch.cuda.current_device() if index is None else index)


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


_REGISTRY: dict[str, Backend] = {}
_STACK: list[str] = []
MASKS = ("attn_mask", "window", "softcap")  # the masking arguments a backend may take


def _mask_reason(name: str) -> str:
    takers = ", ".join(b.name for b in _REGISTRY.values() if name in b.masks) or "none yet"
    return f"{name} is not supported (backends that take it: {takers})"


def register_backend(backend: Backend) -> Backend:
    """Add a backend under its name (replacing one of the same name) and return it."""
    _REGISTRY[backend.name] = backend
    return backend


def registered_backends() -> list[str]:
    """Names of every registered backend, in registration order."""
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The backend called ``name``; ``ValueError`` listing the registered names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise ValueError(f"backend={name!r} is not registered; registered: {known}") from None


def available_backends() -> dict[str, str | None]:
    """Every registered backend mapped to None when usable here, else the reason it is not."""
    return {name: b.unavailable() for name, b in _REGISTRY.items()}


def default_backend() -> str:
    """``triton`` on a GPU or under the Triton interpreter, ``reference`` otherwise."""
    if torch.cuda.is_available() or triton_interpreting():
        return "triton"
    return "reference"


def resolve_backend(name: str | None) -> str:
    """Apply the selection order (argument > use_backend > FLASHDUO_BACKEND > default)."""
    if name is None and _STACK:
        name = _STACK[-1]
    if name is None:
        name = os.environ.get("FLASHDUO_BACKEND") or default_backend()
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str or None, got {type(name).__name__}")
    get_backend(name)
    return name


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def resolve_deterministic(value: bool | None) -> bool:
    """The backward's mode: ``value`` when given, else ``FLASHDUO_DETERMINISTIC`` (1 / true / yes
    / on, or 0 / false / no / off, any case), else True."""
    if value is not None:
        return value
    env = os.environ.get("FLASHDUO_DETERMINISTIC", "").strip().lower()
    if not env or env in _TRUE:
        return True
    if env in _FALSE:
        return False
    raise ValueError(
        f"FLASHDUO_DETERMINISTIC must be one of 1, true, yes, on, 0, false, no, off; got {env!r}"
    )


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Make ``name`` the backend for calls inside the ``with`` block that pass no ``backend=``."""
    get_backend(name)
    _STACK.append(name)
    try:
        yield
    finally:
        _STACK.pop()
