"""The triton backend inside torch.compile: Inductor launches flashduo's Triton kernels from its own
code (``flashduo::triton_fwd`` / ``triton_bwd`` / ``triton_bwd_packed``, torch.library triton
ops), for q, k, v given apart or packed (``attention_qkvpacked``), CUDA-graph replay
(``mode="reduce-overhead"``) gives eager's bits, and the triton ops pass opcheck."""

from __future__ import annotations

import pytest
import torch

import flashduo
import reference
from tests.cases import ON_GPU

pytestmark = pytest.mark.skipif(not ON_GPU, reason="the triton ops run on a CUDA GPU")


def _inputs(n: int = 197, d: int = 64, dtype=torch.bfloat16):
    torch.manual_seed(0)
    qkv = torch.randn(2, n, 3, 4, d, device="cuda", dtype=dtype).requires_grad_()
    return qkv, torch.randn(2, 4, n, d, device="cuda", dtype=dtype)


def _attend(qkv: torch.Tensor, table, causal: bool, packed: bool = False) -> torch.Tensor:
    """timm's layout: q, k, v strided views of one (B, N, 3, H, D) projection, given as three
    tensors or (``packed``) as the one; out (B, H, N, D)."""
    if packed:
        return flashduo.attention_qkvpacked(qkv, causal=causal, backend="triton",
                                            rope=table).transpose(1, 2)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return flashduo.attention(q, k, v, causal=causal, backend="triton", rope=table)


def _table(n: int):
    side = int((n - 1) ** 0.5)
    return reference.CosSinTable(100.0, side, 64, device="cuda")


@pytest.mark.parametrize("packed", [False, True], ids=["qkv", "packed"])
def test_inductor_launches_the_triton_kernels(packed: bool) -> None:
    """The compiled code calls the forward and backward kernels itself, not the flashduo ops."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    qkv, dout = _inputs()
    table = _table(197)

    compiled = torch.compile(lambda x: _attend(x, table, False, packed), fullgraph=True)

    def step(x):
        return torch.autograd.grad(compiled(x), x, dout)

    _, codes = run_and_get_code(step, qkv)
    code = "\n".join(codes)
    from triton_impl.bwd import one_launch_bwd

    bwd_kernels = (("_preprocess_kernel", "_bwd_kernel") if one_launch_bwd(64, False)
                   else ("_dq_kernel", "_dkdv_kernel"))
    for kernel in ("_rotate_kernel", "_fwd_kernel", *bwd_kernels):
        assert kernel in code, f"{kernel} is not launched by the compiled code"
    assert "torch.ops.flashduo" not in code, "the compiled code calls a flashduo op"


@pytest.mark.parametrize("packed", [False, True], ids=["qkv", "packed"])
@pytest.mark.parametrize("rope", [False, True], ids=["plain", "rope"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_cuda_graph_replay_is_eager_bit_for_bit(rope: bool, causal: bool, packed: bool) -> None:
    """``torch.compile(mode="reduce-overhead")`` captures forward and backward in CUDA graphs;
    every replay gives eager's out and gradient exactly."""
    torch._dynamo.reset()
    qkv, dout = _inputs()
    table = _table(197) if rope else None

    def step(attend):
        out = attend(qkv)
        (grad,) = torch.autograd.grad(out, qkv, dout)
        return out.clone(), grad.clone()

    want = step(lambda x: _attend(x, table, causal, packed))
    compiled = torch.compile(lambda x: _attend(x, table, causal, packed),
                             mode="reduce-overhead", fullgraph=True)
    for _ in range(4):  # warm-up, recording, then replays
        got = step(compiled)
        for name, g, w in zip(("out", "grad"), got, want):
            assert torch.equal(g, w), f"{name} differs from eager"


@pytest.mark.parametrize("rope", [False, True], ids=["plain", "rope"])
def test_triton_ops_opcheck(rope: bool) -> None:
    """The triton ops' schema, fake implementation and autograd registration hold."""
    qkv, dout = _inputs(n=50, dtype=torch.float16)
    q, k, v = (t.detach().requires_grad_() for t in qkv.permute(2, 0, 3, 1, 4).unbind(0))
    table = _table(50)
    tables = (table.COSP, table.SINP, 1) if rope else ()
    torch.library.opcheck(torch.ops.flashduo.triton_fwd.default, (q, k, v, True, 0.2, *tables))
    with torch.no_grad():  # the backward op has no backward of its own
        out, lse, qr, kr = torch.ops.flashduo.triton_fwd(q, k, v, True, 0.2, *tables)
    saved = (qr, kr) if rope else (q.detach(), k.detach())
    for op in (torch.ops.flashduo.triton_bwd, torch.ops.flashduo.triton_bwd_packed):
        torch.library.opcheck(op.default, (dout, *saved, v.detach(), out, lse, True, 0.2, *tables),
                              {"rotated": rope})
