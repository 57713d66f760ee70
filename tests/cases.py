"""The test cases and tolerances, in one place, shared by every backend.

Pass rule (FlashAttention's): a backend's max abs error against the float64 reference must be at
most ``FACTOR`` x PyTorch's own error computing the same in the input dtype (plain float32 for
float32: the Triton kernels use 3xTF32 dots there), plus a small per-dtype absolute floor.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"

FACTOR = {"out": 2.0, "lse": 2.0, "grad": 3.0}
FLOOR = {torch.float16: 2e-4, torch.bfloat16: 2e-3, torch.float32: 2e-5}

# Without a GPU the Triton kernels run in the interpreter: small shapes only.
SEQLENS = [1, 17, 64, 113, 128, 197, 203, 1023, 1025] + ([2048, 4096] if ON_GPU else [])
SMALL_SEQLENS = [1, 17, 64, 113, 128]
HEAD_DIMS = [16, 32, 64, 80, 96, 128, 256]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


@dataclass(frozen=True)
class Case:
    """One attention problem: q (b, hq, nq, d), k/v (b, hkv, nk, d)."""

    b: int
    hq: int
    hkv: int
    nq: int
    nk: int
    d: int
    dtype: torch.dtype
    causal: bool
    layout: str = "contiguous"  # contiguous | packed | bnhd | strided_last

    @property
    def id(self) -> str:
        dt = str(self.dtype).removeprefix("torch.")
        c = "causal" if self.causal else "full"
        return f"b{self.b}h{self.hq}x{self.hkv}-q{self.nq}k{self.nk}-d{self.d}-{dt}-{c}-{self.layout}"


def _seq_cases() -> list[Case]:
    lens = SEQLENS if ON_GPU else SMALL_SEQLENS
    dims = [64, 128] if ON_GPU else [64]
    dts = [torch.float16, torch.bfloat16]
    return [
        Case(2, 2, 2, n, n, d, dt, c)
        for n, d, dt, c in itertools.product(lens, dims, dts, (False, True))
    ]


def _ragged_cases() -> list[Case]:
    pairs = [(1, 17), (17, 1), (113, 203), (203, 113), (64, 128), (128, 17)]
    if ON_GPU:
        pairs += [(64, 1023), (1025, 128), (1023, 1025), (197, 4096), (4096, 1023)]
    return [
        Case(2, 2, 2, nq, nk, 64, dt, c)
        for (nq, nk), dt, c in itertools.product(pairs, (torch.float16, torch.bfloat16), (False, True))
    ]


def _head_dim_cases() -> list[Case]:
    nq, nk = (113, 203) if ON_GPU else (33, 47)
    return [
        Case(1, 2, 2, nq, nk, d, dt, c)
        for d, dt, c in itertools.product(HEAD_DIMS, DTYPES, (False, True))
    ]


def _gqa_cases() -> list[Case]:
    shapes = [(197, 197), (1025, 1023)] if ON_GPU else [(64, 64), (17, 113)]
    return [
        Case(2, hq, hkv, nq, nk, d, torch.bfloat16 if ON_GPU else torch.float16, c)
        for (hq, hkv), (nq, nk), d, c in itertools.product(
            [(8, 2), (4, 1)], shapes, [64, 128], (False, True)
        )
    ]


def _grid_cases() -> list[Case]:
    b, h, n = (4, 16, 1025) if ON_GPU else (2, 4, 64)
    dt = torch.bfloat16 if ON_GPU else torch.float16
    return [Case(b, h, h, n, n, 128, dt, c) for c in (False, True)]


def _layout_cases() -> list[Case]:
    n = 197 if ON_GPU else 40
    return [
        Case(2, 4, 4, n, n, 64, torch.float16, c, layout)
        for layout, c in itertools.product(("packed", "bnhd", "strided_last"), (False, True))
    ]


def _many_heads_cases() -> list[Case]:
    """ViT-like sizes with at least two (batch, head) pairs per SM of an H100 / H200, where the
    CUDA forward switches to its short-sequence kernel where Nq <= 256 (GPU only)."""
    if not ON_GPU:
        return []
    shapes = [(197, 197, 6, 6), (197, 197, 6, 3), (1, 1, 6, 6), (17, 203, 6, 2), (203, 17, 6, 6),
              (257, 257, 6, 6), (290, 290, 6, 3)]
    cases = [
        Case(48, hq, hkv, nq, nk, 64, torch.bfloat16, c)
        for (nq, nk, hq, hkv), c in itertools.product(shapes, (False, True))
    ]
    return cases + [Case(48, 6, 6, 197, 197, 64, torch.float16, c, "packed") for c in (False, True)]


CASES = (
    _seq_cases() + _ragged_cases() + _head_dim_cases() + _gqa_cases() + _grid_cases()
    + _layout_cases() + _many_heads_cases()
)


def make_inputs(case: Case, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh standard-normal q, k, v for ``case`` in its layout, requiring grad."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=DEVICE, dtype=torch.float32).to(case.dtype)

    b, hq, hkv, nq, nk, d = case.b, case.hq, case.hkv, case.nq, case.nk, case.d
    if case.layout == "packed":
        # One (B, N, 3, H, D) projection output, viewed as q, k, v without copies.
        qkv = randn(b, nq, 3, hq, d)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    elif case.layout == "bnhd":
        q = randn(b, nq, hq, d).transpose(1, 2)
        k = randn(b, nk, hkv, d).transpose(1, 2)
        v = randn(b, nk, hkv, d).transpose(1, 2)
    elif case.layout == "strided_last":
        q = randn(b, hq, d, nq).transpose(-1, -2)
        k = randn(b, hkv, d, nk).transpose(-1, -2)
        v = randn(b, hkv, d, nk).transpose(-1, -2)
    else:
        q, k, v = randn(b, hq, nq, d), randn(b, hkv, nk, d), randn(b, hkv, nk, d)
    return tuple(t.requires_grad_() for t in (q, k, v))


def tolerance(kind: str, baseline_err: float, dtype: torch.dtype) -> float:
    """Allowed max abs error: FACTOR[kind] x PyTorch's own error + FLOOR[dtype]."""
    return FACTOR[kind] * baseline_err + FLOOR[dtype]


def max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs difference in float64; NaN anywhere counts as infinite error."""
    diff = (x.double() - ref.double()).abs()
    if diff.numel() == 0:
        return 0.0
    if torch.isnan(diff).any():
        return float("inf")
    return diff.max().item()


def assert_close(
    name: str, x: torch.Tensor, ref: torch.Tensor, baseline: torch.Tensor, kind: str,
    dtype: torch.dtype,
) -> None:
    """Assert ``x`` is within tolerance of ``ref``; the message gives max/mean error and where.

    ``baseline`` is PyTorch's own result in the input ``dtype``; it sets the tolerance.
    """
    err = max_err(x, ref)
    base = max_err(baseline, ref)
    tol = tolerance(kind, base, dtype)
    if not err <= tol:
        diff = (x.double() - ref.double()).abs().nan_to_num(float("inf"))
        where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        n_nan = int(torch.isnan(x).sum())
        raise AssertionError(
            f"{name}: max err {err:.3e} > tol {tol:.3e} (PyTorch's own {base:.3e}); "
            f"mean err {diff.clamp(max=1e30).mean().item():.3e}; worst at {where}; NaNs {n_nan}"
        )


def poison_allocator(*like: tuple[tuple[int, ...], torch.dtype]) -> None:
    """Leave NaN-filled blocks of these (shape, dtype) sizes in the CUDA caching allocator.

    The kernels allocate their outputs with ``torch.empty``; the allocator hands back these
    freed blocks, so any element a kernel forgets to write reads as NaN and fails the test.
    """
    if not ON_GPU:
        return
    bufs = [torch.full(shape, float("nan"), dtype=dt, device=DEVICE) for shape, dt in like]
    del bufs
