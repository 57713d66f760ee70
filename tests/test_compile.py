"""The triton backend inside torch.compile with CUDA graphs: ``mode="reduce-overhead"`` captures a
forward and backward of timm's attention layout (with and without 2D RoPE) and every replay gives
eager's bits."""

from __future__ import annotations

import pytest
import torch

import flashduo
import reference
from tests.cases import ON_GPU

pytestmark = pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need a CUDA GPU")


def _inputs(n: int = 197, d: int = 64, dtype=torch.bfloat16):
    torch.manual_seed(0)
    qkv = torch.randn(2, n, 3, 4, d, device="cuda", dtype=dtype).requires_grad_()
    return qkv, torch.randn(2, 4, n, d, device="cuda", dtype=dtype)


def _attend(qkv: torch.Tensor, table, causal: bool) -> torch.Tensor:
    """timm's layout: q, k, v strided views of one (B, N, 3, H, D) projection."""
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return flashduo.attention(q, k, v, causal=causal, backend="triton", rope=table)


def _table(n: int):
    side = int((n - 1) ** 0.5)
    return reference.CosSinTable(100.0, side, 64, device="cuda")


@pytest.mark.parametrize("rope", [False, True], ids=["plain", "rope"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_cuda_graph_replay_is_eager_bit_for_bit(rope: bool, causal: bool) -> None:
    """``torch.compile(mode="reduce-overhead")`` captures forward and backward in CUDA graphs;
    every replay gives eager's out and gradient exactly."""
    torch._dynamo.reset()
    qkv, dout = _inputs()
    table = _table(197) if rope else None

    def step(attend):
        out = attend(qkv)
        (grad,) = torch.autograd.grad(out, qkv, dout)
        return out.clone(), grad.clone()

    want = step(lambda x: _attend(x, table, causal))
    compiled = torch.compile(lambda x: _attend(x, table, causal), mode="reduce-overhead",
                             fullgraph=True)
    for _ in range(4):  # warm-up, recording, then replays
        got = step(compiled)
        for name, g, w in zip(("out", "grad"), got, want):
            assert torch.equal(g, w), f"{name} differs from eager"
