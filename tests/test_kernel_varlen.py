"""The kernel backends' packed sequences (``flashduo.attention_varlen``; every kernel backend with
``Backend.fwd_varlen``, ``triton`` today, ``tests.helpers.varlen_backends``) against the float64
reference of each sequence alone, by the pass rule (each sequence's PyTorch error sets its
tolerance), forward and backward: ragged lengths across tiles, cross attention, causal, window
and softcap per sequence, GQA, empty query and key sequences, per-image 2D RoPE. Without a GPU
the Triton kernels run in the Triton interpreter at small sizes."""

from __future__ import annotations

import pytest
import torch

import flashduo
from reference.passrule import KINDS, NAMES, Case, truth_and_baseline
from tests.cases import DEVICE, ON_GPU, assert_close, poison_allocator
from tests.helpers import skip_if_unrunnable, varlen_backends

# (lens_q, lens_k, hq, hkv, d, causal, keywords)
SMALL = [
    ([5, 70, 33], [5, 70, 33], 2, 2, 32, False, {}),
    ([5, 70, 33], [5, 70, 33], 4, 2, 32, True, {}),
    ([17, 40, 3], [30, 9, 64], 2, 1, 16, False, {"softcap": 2.0}),
    ([66, 12], [66, 12], 2, 2, 32, False, {"window": (5, 2)}),
    ([40, 50], [40, 50], 2, 2, 64, True, {"window": (9, 0), "softcap": 3.0}),
    ([3, 0, 20, 9], [7, 6, 0, 9], 2, 2, 32, False, {}),  # an empty query and key sequence
]
LARGE = [
    ([128, 1000, 3000, 77], [128, 1000, 3000, 77], 8, 2, 128, True, {}),
    ([513, 2048, 1], [700, 2048, 1], 8, 8, 64, False, {"window": (256, 256)}),
]
SHAPES = SMALL + (LARGE if ON_GPU else [])
DTYPES = [torch.float16, torch.bfloat16] if ON_GPU else [torch.float16, torch.float32]


def _cu(lens: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32,
                        device=DEVICE)


def _dense(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(0, 1).unsqueeze(0)


def _per_sequence(q, k, v, dout, lens_q, lens_k, causal, keywords):
    """(truth, baseline) as (out, lse, dq, dk, dv) in the packed layout, each sequence through
    ``truth_and_baseline`` alone; a query sequence without keys: out 0, lse -inf, no grads."""
    cq, ck = _cu(lens_q).tolist(), _cu(lens_k).tolist()
    parts: list[list[list[torch.Tensor]]] = [[[] for _ in NAMES] for _ in range(2)]
    for i in range(len(lens_q)):
        qi, di = q[cq[i]:cq[i + 1]], dout[cq[i]:cq[i + 1]]
        ki, vi = k[ck[i]:ck[i + 1]], v[ck[i]:ck[i + 1]]
        if lens_q[i] == 0 or lens_k[i] == 0:
            zero = (torch.zeros_like(qi, dtype=torch.float64),
                    torch.full((q.shape[1], lens_q[i]), float("-inf"), dtype=torch.float64,
                               device=q.device),
                    torch.zeros_like(qi, dtype=torch.float64),
                    torch.zeros_like(ki, dtype=torch.float64),
                    torch.zeros_like(vi, dtype=torch.float64))
            for r in range(2):
                for j, t in enumerate(zero):
                    parts[r][j].append(t)
            continue
        results = truth_and_baseline(_dense(qi), _dense(ki), _dense(vi), causal, _dense(di),
                                     **keywords)
        for r, res in enumerate(results):
            out, lse, dq, dk, dv = res
            for j, t in enumerate((out[0].transpose(0, 1), lse[0], dq[0].transpose(0, 1),
                                   dk[0].transpose(0, 1), dv[0].transpose(0, 1))):
                parts[r][j].append(t)
    return tuple(tuple(torch.cat(p, dim=-1 if j == 1 else 0) for j, p in enumerate(r))
                 for r in parts)


def _id(s: tuple) -> str:
    return (f"{s[0]}x{s[1]}-{s[2]}/{s[3]}-{s[4]}{'-causal' if s[5] else ''}-{s[6]}"
            .replace(" ", ""))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("backend", "shape"), [
    pytest.param(backend, shape, id=f"{backend}-{_id(shape)}")
    for shape in SHAPES for backend in varlen_backends(*shape[-1])])
def test_packed_sequences_follow_the_reference(backend: str, shape: tuple,
                                               dtype: torch.dtype) -> None:
    lens_q, lens_k, hq, hkv, d, causal, keywords = shape
    skip_if_unrunnable(backend, Case(1, hq, hkv, max(lens_q), max(lens_k), d, dtype, causal))
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def rand(n: int, h: int) -> torch.Tensor:
        return torch.randn(n, h, d, generator=gen, device=DEVICE).to(dtype).requires_grad_()

    q, k, v = rand(sum(lens_q), hq), rand(sum(lens_k), hkv), rand(sum(lens_k), hkv)
    dout = torch.randn(q.shape, generator=gen, device=DEVICE).to(dtype)
    poison_allocator((q.shape, dtype), ((hq, q.shape[0]), torch.float32))
    out, lse = flashduo.attention_varlen(q, k, v, _cu(lens_q), _cu(lens_k), max(lens_q),
                                         max(lens_k), causal, backend=backend, return_lse=True,
                                         **keywords)
    poison_allocator((q.shape, dtype), (k.shape, dtype), (v.shape, dtype))
    got = (out, lse, *torch.autograd.grad(out, (q, k, v), dout))
    truth, baseline = _per_sequence(q.detach(), k.detach(), v.detach(), dout, lens_q, lens_k,
                                    causal, keywords)
    for name, kind, x, ref, base in zip(NAMES, KINDS, got, truth, baseline, strict=True):
        assert_close(f"{name}", x, ref, base, kind, dtype, backend)
    empty = torch.isinf(truth[1][0])
    if empty.any():
        assert (out[empty] == 0).all() and (got[2][empty] == 0).all()


def test_per_image_rope_through_the_kernels() -> None:
    """Packed images with per-image RoPE grids (``CosSinTable.for_grids``) through the triton
    kernels (q, k turned by its rotation kernel, dq, dk turned back inside its backward) equal
    the float64 reference backend, forward and gradients."""
    dtype = torch.float16
    skip_if_unrunnable("triton", Case(1, 2, 2, 17, 17, 32, dtype, False))
    grids = [(2, 3), (4, 4), (1, 5), (9, 8)]
    lens = [1 + h * w for h, w in grids]
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    q, k, v, dout = (torch.randn(sum(lens), 2, 32, generator=gen, device=DEVICE).to(dtype)
                     for _ in range(4))
    table = flashduo.CosSinTable.for_grids(grids, base=10.0, D=32, num_prefix_tokens=1,
                                           device=DEVICE)
    results = []
    for backend, x in (("triton", (q, k, v)), ("reference", (q.double(), k.double(), v.double()))):
        x = [t.clone().requires_grad_() for t in x]
        out = flashduo.attention_varlen(*x, _cu(lens), _cu(lens), max(lens), max(lens), True,
                                        backend=backend, rope=table)
        results.append((out, *torch.autograd.grad(out, x, dout.to(out.dtype))))
    for name, got, want in zip(("out", "dq", "dk", "dv"), *results, strict=True):
        torch.testing.assert_close(got.double(), want, atol=3e-3 * want.abs().max().item(),
                                   rtol=0, msg=name)
