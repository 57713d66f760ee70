"""The reference itself: checked against PyTorch's SDPA and autograd in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import reference


def _qkv(hq, hkv, nq, nk, d=24):
    g = torch.Generator().manual_seed(hq * 1000 + nq + nk)
    mk = lambda h, n: torch.randn(2, h, n, d, generator=g, dtype=torch.float64,  # noqa: E731
                                  requires_grad=True)
    return mk(hq, nq), mk(hkv, nk), mk(hkv, nk)


SHAPES = [(2, 2, 17, 17), (4, 2, 13, 29), (4, 1, 31, 9), (2, 2, 1, 5)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_sdpa(shape, causal) -> None:
    q, k, v = _qkv(*shape)
    out, lse = reference.attention_ref(q, k, v, causal, scale=0.37)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.37, enable_gqa=True)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-10)
    s = 0.37 * q @ k.repeat_interleave(q.shape[1] // k.shape[1], 1).transpose(-1, -2)
    if causal:
        s = s.masked_fill(~reference.causal_mask(q.shape[2], k.shape[2]), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(s, -1))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_autograd(shape, causal) -> None:
    q, k, v = _qkv(*shape)
    out, _ = reference.attention_ref(q, k, v, causal)
    dout = torch.randn_like(out)
    want = torch.autograd.grad(out, (q, k, v), dout)
    got = reference.attention_bwd_ref(dout, q, k, v, causal)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-10)


def test_naive_matches_reference() -> None:
    q, k, v = _qkv(4, 2, 33, 21)
    q, k, v = q.float(), k.float(), v.float()
    out, _ = reference.attention_ref(q, k, v, True)
    torch.testing.assert_close(reference.attention_naive(q, k, v, True).double(), out,
                               atol=1e-5, rtol=0)


def test_causal_mask_is_top_left() -> None:
    m = reference.causal_mask(2, 4)
    assert m.tolist() == [[True, False, False, False], [True, True, False, False]]
