"""The kernel backends' sliding window, softcap and attention masks against the float64 reference
by the pass rule, forward and backward, NaN-poisoned outputs, on every kernel backend that
declares the argument (``tests.helpers.mask_backends``; ``triton`` today): bands that cross tiles,
bands that leave rows without a key (out 0, lse -inf, zero gradients), bands of one key, the
causal mask folded into a window, GQA, Nq != Nk, softcap alone and with both masks. Without a GPU
the Triton kernels run in the Triton interpreter at small sizes (float16 and float32). The
triton-only tests at the end cover its torch.compile and opcheck paths."""

from __future__ import annotations

import pytest
import torch

import flashduo
from reference.passrule import KINDS, NAMES, Case
from tests.cases import ON_GPU, assert_close
from tests.helpers import (
    assert_compiled_matches_eager,
    case_inputs,
    mask_backends,
    run_backend,
    run_reference,
    skip_if_unrunnable,
)

# (b, hq, hkv, nq, nk, d, causal, masks)
SMALL = [
    (1, 2, 2, 37, 37, 32, False, {"window": (5, 3)}),
    (1, 2, 2, 64, 64, 32, True, {"window": (7, -1)}),
    (2, 4, 2, 50, 70, 16, False, {"window": (3, 0)}),
    (1, 2, 1, 70, 40, 32, False, {"window": (2, 0)}),  # rows from 42 on see no key
    (1, 2, 2, 45, 45, 32, False, {"window": (0, 0)}),  # every row sees one key
    (1, 2, 2, 130, 130, 64, False, {"window": (-1, 10)}),
    (1, 3, 3, 130, 130, 32, False, {"window": (40, 40)}),
    (1, 2, 2, 45, 45, 32, False, {"softcap": 2.0}),
    (1, 2, 2, 45, 61, 32, True, {"softcap": 1.5}),
    (2, 2, 2, 80, 80, 64, True, {"window": (20, 4), "softcap": 3.0}),
    (1, 2, 1, 50, 50, 80, False, {"window": (6, 6), "softcap": 4.0}),  # padded head dim
]
LARGE = [
    (2, 8, 2, 1024, 1024, 64, False, {"window": (128, 0)}),
    (1, 8, 8, 2048, 2048, 128, True, {"window": (256, -1)}),
    (2, 4, 4, 1000, 1000, 128, False, {"window": (300, 300), "softcap": 30.0}),
    (1, 4, 2, 777, 1100, 64, True, {"softcap": 20.0}),
    (1, 4, 4, 1024, 512, 64, False, {"window": (64, 64)}),  # rows past Nk + 64 see no key
]
# (b, hq, hkv, nq, nk, d, causal, mask kind): attention masks made per case (``_attn_mask``)
MASKED = [
    (2, 2, 2, 40, 75, 32, False, "key-padding"),  # (B, 1, 1, Nk) bool: padded keys, skipped tiles
    (1, 4, 2, 33, 33, 32, True, "rows"),  # (B, Hq, Nq, Nk) bool with rows left without a key
    (2, 2, 1, 50, 50, 16, False, "additive"),  # (Hq, Nq, Nk) float, -inf entries
    (1, 2, 2, 70, 70, 32, True, "additive-keys"),  # (Nk,) float
    (1, 2, 2, 40, 40, 96, False, "rows"),  # padded head dim
]
MASKED_LARGE = [
    (4, 8, 8, 1024, 1024, 64, False, "key-padding"),
    (1, 8, 2, 512, 512, 128, True, "additive"),
]
SHAPES = SMALL + (LARGE if ON_GPU else [])
MASK_SHAPES = MASKED + (MASKED_LARGE if ON_GPU else [])
DTYPES = [torch.float16, torch.bfloat16] if ON_GPU else [torch.float16, torch.float32]


def _id(shape: tuple) -> str:
    b, hq, hkv, nq, nk, d, causal, masks = shape
    what = "-".join(f"{k}{v}" for k, v in masks.items()).replace(" ", "")
    return f"{b}x{hq}/{hkv}x{nq}x{nk}x{d}{'-causal' if causal else ''}-{what}"


def _backend_shapes(shapes: list[tuple]) -> list:
    """(backend, shape) for each shape and each kernel backend that takes its masks."""
    return [pytest.param(backend, shape, id=f"{backend}-{_id(shape)}")
            for shape in shapes for backend in mask_backends(*shape[-1])]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("backend", "shape"), _backend_shapes(SHAPES))
def test_window_and_softcap_follow_the_reference(backend: str, shape: tuple,
                                                 dtype: torch.dtype) -> None:
    b, hq, hkv, nq, nk, d, causal, masks = shape
    _check_masked(backend, Case(b, hq, hkv, nq, nk, d, dtype, causal), _id(shape),
                  lambda q: masks)


def _check_masked(backend: str, case: Case, label: str, masks_for) -> None:
    """The backend's out, lse and gradients on ``case`` with the masking keywords
    ``masks_for(q)`` against the float64 reference by the pass rule; rows that see no key: out
    0, lse -inf, no gradient."""
    skip_if_unrunnable(backend, case)
    q, k, v, dout = case_inputs(case)
    masks = masks_for(q)
    got = run_backend(backend, q, k, v, case.causal, dout, **masks)
    truth, baseline = run_reference(q.detach(), k.detach(), v.detach(), case.causal, dout,
                                    **masks)
    for name, kind, x, ref, base in zip(NAMES, KINDS, got, truth, baseline, strict=True):
        assert_close(f"{label} {name}", x, ref, base, kind, case.dtype, backend)
    empty = torch.isinf(truth[1])
    if empty.any():
        assert (got[0][empty] == 0).all() and (got[1][empty] == float("-inf")).all()
        assert (got[2][empty] == 0).all()


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"] if ON_GPU else ["aot_eager"])
def test_masked_triton_call_compiles_fullgraph(compiler: str) -> None:
    """A windowed, softcapped call compiles without graph breaks (through the plain op: the
    traced Triton ops take no masks) and gives eager's loss and gradients."""
    case = Case(1, 2, 2, 80, 80, 32, torch.float16, True)
    skip_if_unrunnable("triton", case)
    q, k, v, _ = case_inputs(case)

    def loss(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = flashduo.attention(q, k, v, True, backend="triton", window=(9, -1), softcap=4.0)
        return out.float().square().sum()

    assert_compiled_matches_eager(loss, (q, k, v), compiler)


def _attn_mask(kind: str, b: int, hq: int, nq: int, nk: int, device: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    if kind == "key-padding":  # the last keys of each batch entry but the first left out
        keep = torch.ones(b, 1, 1, nk, dtype=torch.bool)
        for i in range(1, b):
            keep[i, ..., nk * (3 + i) // (4 + i):] = False
        return keep.to(device)
    if kind == "rows":
        keep = torch.rand(b, hq, nq, nk, generator=gen) > 0.5
        keep[:, :, 3] = False  # a row that sees no key
        return keep.to(device)
    if kind == "additive":
        bias = torch.randn(hq, nq, nk, generator=gen)
        bias[0, 5, :] = float("-inf")  # a row that sees no key
        bias[1, :, 7] = float("-inf")
        return bias.to(device)
    return torch.randn(nk, generator=gen).to(device)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("backend", "shape"), [
    pytest.param(backend, shape, id=f"{backend}-{'x'.join(map(str, shape))}")
    for shape in MASK_SHAPES for backend in mask_backends("attn_mask")])
def test_attention_masks_follow_the_reference(backend: str, shape: tuple,
                                              dtype: torch.dtype) -> None:
    b, hq, hkv, nq, nk, d, causal, kind = shape
    _check_masked(backend, Case(b, hq, hkv, nq, nk, d, dtype, causal), kind,
                  lambda q: {"attn_mask": _attn_mask(kind, b, hq, nq, nk, q.device.type)})


def test_masked_triton_ops_pass_opcheck() -> None:
    """``flashduo::fwd`` / ``bwd`` with every masking argument on the triton backend pass
    torch.library.opcheck (schema, fake tensors, autograd registration)."""
    case = Case(1, 2, 2, 24, 24, 16, torch.float16, True)
    skip_if_unrunnable("triton", case)
    q, k, v, _ = case_inputs(case)
    masks = (_attn_mask("rows", 1, 2, 24, 24, q.device.type), [3, 1], 2.0)
    args = (q, k, v, True, 0.3, "triton", None, None, 0, True, *masks)
    out, lse, *_ = torch.ops.flashduo.fwd(*args)
    torch.library.opcheck(torch.ops.flashduo.fwd.default, args)
    saved = [t.detach() for t in (q, k, v, out, lse)]
    torch.library.opcheck(torch.ops.flashduo.bwd.default,
                          (torch.randn_like(out), *saved, True, 0.3, "triton", None, None, 0,
                           True, False, *masks))
