"""``flashduo.attention_qkvpacked``: q, k, v as one (B, N, 3, H, D) tensor give ``attention``'s
output and gradients exactly, the gradient as one packed tensor (written in place by backends
with ``packed_grads``, NaN-poisoned first), also under ``torch.compile``; bad input is refused by
name."""

from __future__ import annotations

import pytest
import torch

import flashduo
import reference
from flashduo import registry
from tests.cases import DEVICE, ON_GPU, poison_allocator
from tests.helpers import assert_compiled_matches_eager, skip_if_unavailable

DTYPE = torch.bfloat16 if ON_GPU else torch.float32
BACKENDS = ("reference", "torch", "triton", "cuda")


def _packed(b: int = 2, n: int = 37, h: int = 2, d: int = 64) -> torch.Tensor:
    """A (B, N, 3, H, D) view of a wider projection, as a qkv linear with an extra column block
    would give (strides that are not the contiguous ones)."""
    x = torch.randn(b, n, 3 * h * d + 8, device=DEVICE, dtype=DTYPE)
    return x[..., 8:].view(b, n, 3, h, d).requires_grad_()


@pytest.mark.parametrize("rope", [False, True], ids=["plain", "rope"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_equals_unpacked(backend: str, causal: bool, rope: bool) -> None:
    skip_if_unavailable(backend)
    if backend == "cuda" and not ON_GPU:
        pytest.skip("cuda runs on a GPU")
    torch.manual_seed(0)
    n = 1 + 36
    table = reference.CosSinTable(100.0, 6, 64, device=DEVICE) if rope else None
    qkv = _packed(n=n)
    dout = torch.randn(2, n, 2, 64, device=DEVICE, dtype=DTYPE)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    want = flashduo.attention(q, k, v, causal=causal, backend=backend, rope=table)
    (want_grad,) = torch.autograd.grad(want, qkv, dout.transpose(1, 2))
    poison_allocator((qkv.shape, DTYPE), (q.shape, DTYPE))
    out = flashduo.attention_qkvpacked(qkv, causal=causal, backend=backend, rope=table)
    assert out.shape == (2, n, 2, 64)
    poison_allocator((qkv.shape, DTYPE), (qkv.shape, DTYPE))
    (grad,) = torch.autograd.grad(out, qkv, dout)
    assert grad.shape == qkv.shape
    assert torch.equal(out, want.transpose(1, 2)), "out differs from attention's"
    assert torch.equal(grad, want_grad), "the packed gradient differs from attention's"


def test_packed_grads_backends_get_the_packed_gradient() -> None:
    """A backend with ``packed_grads`` is handed the one packed gradient to write (no stack
    follows); what it writes there is what the caller gets."""
    ref = flashduo.get_backend("reference")
    seen = []

    def bwd(*args, packed):
        seen.append(packed)
        views = tuple(t.transpose(1, 2) for t in packed.unbind(2))
        for into, got in zip(views, ref.bwd(*args)):
            into.copy_(got)
        return views

    flashduo.register_backend(registry.Backend(
        name="packed-spy", fwd=ref.fwd, bwd=bwd, description="test double", dtypes=ref.dtypes,
        devices=ref.devices, packed_grads=True))
    try:
        qkv = _packed(n=20)
        out = flashduo.attention_qkvpacked(qkv, backend="packed-spy")
        (grad,) = torch.autograd.grad(out.float().sum(), qkv)
        want = torch.autograd.grad(
            flashduo.attention_qkvpacked(qkv, backend="reference").float().sum(), qkv)[0]
    finally:
        registry._REGISTRY.pop("packed-spy")
    (packed,) = seen
    assert packed.shape == qkv.shape and packed.data_ptr() == grad.data_ptr()
    assert torch.equal(grad, want)


@pytest.mark.parametrize("causal", [False, True], ids=["one-launch", "two-launches"])
def test_triton_bwd_writes_the_packed_gradient(causal: bool) -> None:
    """``triton_impl.bwd.attention_bwd(packed=...)`` writes the gradients it would return into
    the packed tensor's slices (one backward kernel without the causal mask, two with it)."""
    skip_if_unavailable("triton")
    from triton_impl.bwd import attention_bwd
    from triton_impl.fwd import attention_fwd

    torch.manual_seed(0)
    with torch.no_grad():
        q, k, v = (t.transpose(1, 2) for t in _packed(n=40).unbind(2))
        out, lse = attention_fwd(q, k, v, causal, 0.125)
        dout = torch.randn_like(out)
        want = attention_bwd(dout, q, k, v, out, lse, causal, 0.125)
        packed = torch.full((2, 40, 3, 2, 64), float("nan"), device=DEVICE, dtype=DTYPE)
        got = attention_bwd(dout, q, k, v, out, lse, causal, 0.125, packed=packed)
    for i, (name, g, w) in enumerate(zip(("dq", "dk", "dv"), got, want)):
        assert torch.equal(g, w), f"{name} written into the packed gradient differs"
        assert torch.equal(packed[:, :, i].transpose(1, 2), w), f"{name} is not in slice {i}"


def test_compiled_matches_eager() -> None:
    backend = "triton" if ON_GPU else "reference"
    compiler = "inductor" if ON_GPU else "aot_eager"

    def block(qkv: torch.Tensor) -> torch.Tensor:
        out = flashduo.attention_qkvpacked(qkv * 1.5, causal=True, backend=backend)
        return out.float().square().sum()

    assert_compiled_matches_eager(block, (_packed(n=40),), compiler)


def test_bad_qkv_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="qkv must be a torch.Tensor"):
        flashduo.attention_qkvpacked([1, 2, 3])
    with pytest.raises(ValueError, match=r"qkv must be 5-D \(B, N, 3, H, D\)"):
        flashduo.attention_qkvpacked(torch.randn(2, 8, 2, 16))
    with pytest.raises(ValueError, match=r"qkv must be 5-D \(B, N, 3, H, D\)"):
        flashduo.attention_qkvpacked(torch.randn(2, 8, 2, 2, 16))
    with pytest.raises(TypeError, match="qkv must be a floating-point tensor"):
        flashduo.attention_qkvpacked(torch.ones(2, 8, 3, 2, 16, dtype=torch.int32))
    with pytest.raises(ValueError, match="scale must be a positive"):
        flashduo.attention_qkvpacked(torch.randn(2, 8, 3, 2, 16), scale=-1.0)
