"""The implementations the benchmark times ("providers"), why one is unavailable, and how to call it.

Every provider is a function (q, k, v) -> out on (B, H, N, D) tensors:

- flashduo backends, by their registry name (``triton``, ``cuda``, ``triton-unfused``, or any other
  registered one): ``flashduo.attention(..., backend=name)``; ``cuda-sm80`` is the ``cuda`` backend
  with ``FLASHDUO_CUDA_ARCH=sm80`` set around each call (its mma.sync forward, which a Hopper GPU
  otherwise replaces by the sm_90a one), so one run shows both; ``cuda-nondet`` is ``cuda`` with
  ``deterministic=False`` (on Hopper at D = 64 and 128 the backward's atomic mode, elsewhere the
  same kernels as ``cuda``; reported unavailable if the backend declares no
  ``deterministic_modes``);
- ``torch-flash`` / ``torch-cudnn`` / ``torch-efficient`` / ``torch-math``: PyTorch SDPA restricted
  to one of its backends;
- ``torch-flex``: FlexAttention under ``torch.compile``, Dynamo's recompile limit raised so that
  a new shape compiles instead of falling back to eager;
- ``naive``: textbook softmax(QKᵀ)V in PyTorch (``reference.attention_naive``), N×N in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

import flashduo
import reference
from flashduo import registry
from flashduo.bench.records import FLEX, NAIVE, NOROPE
from flashduo.bench.timing import Impl

FLASHDUO_PROVIDERS = ("triton", "cuda", "cuda-sm80", "cuda-nondet", "triton-unfused")
FORCED_ARCH = {"cuda-sm80": ("cuda", "sm80")}  # provider -> (backend, FLASHDUO_CUDA_ARCH)
NONDETERMINISTIC = {"cuda-nondet": "cuda"}  # provider -> backend run with deterministic=False
SDPA_PROVIDERS = ("torch-flash", "torch-cudnn", "torch-efficient", "torch-math")
PROVIDERS = (*FLASHDUO_PROVIDERS, *SDPA_PROVIDERS, FLEX, NAIVE)
CPU_PROVIDERS = ("torch-flash", "torch-math", NAIVE)  # what the CPU run can time
ROPE_PREFIX = 1  # the CLS token in front of the patch grid


def parse_providers(values: Iterable[str] | None) -> list[str]:
    """Flatten repeated / comma-separated ``--providers`` values in order, without repeats; every
    provider when none is given."""
    names = [n.strip() for value in values or () for n in value.split(",") if n.strip()]
    return list(dict.fromkeys(names)) or list(PROVIDERS)


def backend_of(name: str) -> str:
    """The registry backend behind flashduo provider ``name``."""
    if name in NONDETERMINISTIC:
        return NONDETERMINISTIC[name]
    return FORCED_ARCH[name][0] if name in FORCED_ARCH else name


def _attention(name: str) -> Impl:
    """flashduo.attention through provider ``name``'s backend (keyword arguments pass through),
    with its forced CUDA architecture set during the call."""
    backend = backend_of(name)
    if name in NONDETERMINISTIC:
        return lambda q, k, v, **kw: flashduo.attention(q, k, v, backend=backend,
                                                        deterministic=False, **kw)
    if name not in FORCED_ARCH:
        return lambda q, k, v, **kw: flashduo.attention(q, k, v, backend=backend, **kw)
    arch = FORCED_ARCH[name][1]

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw) -> torch.Tensor:
        before = os.environ.get("FLASHDUO_CUDA_ARCH")
        os.environ["FLASHDUO_CUDA_ARCH"] = arch
        try:
            return flashduo.attention(q, k, v, backend=backend, **kw)
        finally:
            if before is None:
                del os.environ["FLASHDUO_CUDA_ARCH"]
            else:
                os.environ["FLASHDUO_CUDA_ARCH"] = before

    return fn


def is_flashduo(name: str) -> bool:
    """True for providers that go through the flashduo backend registry."""
    return name in FLASHDUO_PROVIDERS or name in registry.registered_backends()


def unknown_providers(names: Sequence[str]) -> list[str]:
    """Names that are neither a known provider nor a registered flashduo backend."""
    return [n for n in names if n not in PROVIDERS and not is_flashduo(n)]


def unavailable_reason(name: str, device: str) -> str | None:
    """Why provider ``name`` cannot run on ``device`` ("cuda" or "cpu") at all; None if it can.

    Shape-specific refusals (a head dim, a size that would not fit) are asked per cell instead.
    """
    if device == "cpu" and name not in CPU_PROVIDERS:
        return "timings need a CUDA GPU (on the CPU only the PyTorch providers are timed)"
    if is_flashduo(name):
        registered = flashduo.available_backends()
        if backend_of(name) not in registered:
            return f"not a registered flashduo backend (registered: {', '.join(registered)})"
        if name in NONDETERMINISTIC and not flashduo.get_backend(backend_of(name)).deterministic_modes:
            return (f"{backend_of(name)} has one backward, deterministic in both modes: "
                    f"deterministic=False would time the same kernels")
        return registered[backend_of(name)]
    if device == "cuda" and name == "torch-flash" and torch.cuda.get_device_capability() < (8, 0):
        return "PyTorch's FlashAttention kernels need compute capability >= 8.0"
    if name == "torch-cudnn" and not torch.backends.cudnn.is_available():
        return "cuDNN is not available in this torch build"
    if name == FLEX:
        try:
            from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
        except ImportError as exc:
            return f"FlexAttention not importable ({exc})"
    return None


def shape_reasons(name: str, q: torch.Tensor, causal: bool) -> list[str]:
    """Why a flashduo backend refuses q, k, v shaped like ``q`` (B, H, N, D); [] for others."""
    if not is_flashduo(name):
        return []
    return flashduo.get_backend(backend_of(name)).not_supported_reasons(q, q, q, causal)


def sdpa_impl(name: str, causal: bool) -> Impl:
    """SDPA restricted to one backend: ``name`` is one of ``SDPA_PROVIDERS``."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "torch-flash": SDPBackend.FLASH_ATTENTION,
        "torch-cudnn": SDPBackend.CUDNN_ATTENTION,
        "torch-efficient": SDPBackend.EFFICIENT_ATTENTION,
        "torch-math": SDPBackend.MATH,
    }[name]

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return fn


def raise_recompile_limit() -> None:
    """Let Dynamo compile a function for many shapes: past its limit it silently runs eager."""
    import torch._dynamo

    cfg = torch._dynamo.config
    cfg.cache_size_limit = max(cfg.cache_size_limit, 256)
    if hasattr(cfg, "accumulated_cache_size_limit"):
        cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 1024)


def _causal_mask_mod(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


class FlexFactory:
    """``torch.compile``'d FlexAttention, one block mask per causal length.

    Dynamo recompiles per shape and silently falls back to eager (far slower, see perf-notes) once
    its recompile limit is hit, so the limit is raised here before the first compile.
    """

    def __init__(self) -> None:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        raise_recompile_limit()
        self._flex = torch.compile(flex_attention, dynamic=False)
        self._create_block_mask = create_block_mask
        self._masks: dict[tuple[int, str], object] = {}

    def impl(self, causal: bool, n: int, device: str = "cuda") -> Impl:
        """Compiled flex_attention on (B, H, n, D); a causal block mask is built lazily."""

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            mask = None
            if causal:
                key = (n, device)
                if key not in self._masks:
                    self._masks[key] = self._create_block_mask(
                        _causal_mask_mod, None, None, n, n, device=device
                    )
                mask = self._masks[key]
            return self._flex(q, k, v, block_mask=mask)

        return fn


def make_impl(name: str, causal: bool, n: int, flex: FlexFactory | None, device: str) -> Impl:
    """The callable of provider ``name`` for causal / non-causal attention at length n."""
    if is_flashduo(name):
        attend = _attention(name)
        return lambda q, k, v: attend(q, k, v, causal=causal)
    if name in SDPA_PROVIDERS:
        return sdpa_impl(name, causal)
    if name == NAIVE:
        return lambda q, k, v: reference.attention_naive(q, k, v, causal)
    if name == FLEX:
        if flex is None:
            raise RuntimeError("FlexAttention factory missing")
        return flex.impl(causal, n, device)
    raise ValueError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}")


def rope_impls(providers: Sequence[str], table: reference.CosSinTable) -> dict[str, Impl]:
    """The ViT-with-RoPE rows (N = 1 + table grid): each flashduo backend of ``providers`` (all
    usable here) with ``rope=``, against the rotation in PyTorch in front of torch-flash and
    torch-cudnn, eager and ``torch.compile``'d (rotation and SDPA in one graph, as a user compiling
    the attention would), and torch-cudnn without any rotation."""

    def with_rope(sdpa: Impl) -> Impl:
        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return sdpa(reference.apply_rope(q, table, ROPE_PREFIX),
                        reference.apply_rope(k, table, ROPE_PREFIX), v)

        return fn

    raise_recompile_limit()
    impls: dict[str, Impl] = {}
    for be in providers:
        if is_flashduo(be):
            attend = _attention(be)
            impls[f"{be}+rope"] = lambda q, k, v, attend=attend: attend(
                q, k, v, rope=table, num_prefix_tokens=ROPE_PREFIX)
    for name in ("torch-flash", "torch-cudnn"):
        if name in providers:
            impls[f"rope-eager+{name}"] = with_rope(sdpa_impl(name, False))
            impls[f"rope-compiled+{name}"] = torch.compile(with_rope(sdpa_impl(name, False)))
    if "torch-cudnn" in providers:
        impls[NOROPE] = sdpa_impl("torch-cudnn", False)
    return impls
