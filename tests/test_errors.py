"""Bad input: a TypeError or ValueError naming the argument, never a crash or a wrong answer."""

from __future__ import annotations

import math

import pytest
import torch

import flashduo
from flashduo.registry import triton_interpreting
from tests.cases import DEVICE, ON_GPU

BACKENDS = flashduo.registered_backends()


def qkv(b=1, hq=2, hkv=2, nq=16, nk=16, d=32, dtype=torch.float16, device=DEVICE):
    q = torch.randn(b, hq, nq, d, device=device).to(dtype)
    k = torch.randn(b, hkv, nk, d, device=device).to(dtype)
    v = torch.randn(b, hkv, nk, d, device=device).to(dtype)
    return q, k, v


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda q, k, v: (q[0], k, v), ValueError, r"q must be 4-D"),
        (lambda q, k, v: (q, k[..., None], v), ValueError, r"k must be 4-D"),
        (lambda q, k, v: (q, k, v.float()), TypeError, r"share one dtype"),
        (lambda q, k, v: (q, k, v[:, :, :-1]), ValueError, r"k and v must have the same shape"),
        (lambda q, k, v: (q, k[..., :16], v[..., :16]), ValueError, r"same head dim"),
        (lambda q, k, v: (q[:, :1].expand(1, 3, 16, 32), k, v), ValueError, r"multiple of k/v"),
        (lambda q, k, v: (q.int(), k.int(), v.int()), TypeError, r"q must be a floating"),
        (lambda q, k, v: ([1], k, v), TypeError, r"q must be a torch"),
        (lambda q, k, v: (q, k.expand(2, 2, 16, 32), v.expand(2, 2, 16, 32)), ValueError,
         r"batch size"),
    ],
    ids=["q-rank", "k-rank", "mixed-dtype", "kv-shape", "head-dim", "heads", "int", "not-tensor",
         "batch"],
)
def test_bad_shapes_and_dtypes(backend, mutate, exc, match) -> None:
    q, k, v = mutate(*qkv())
    with pytest.raises(exc, match=match):
        flashduo.attention(q, k, v, backend=backend)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_bad_scale(scale) -> None:
    with pytest.raises(ValueError, match="scale must be a positive finite"):
        flashduo.attention(*qkv(), scale=scale, backend="reference")


def test_bad_scale_type_and_causal() -> None:
    with pytest.raises(TypeError, match="scale"):
        flashduo.attention(*qkv(), scale="0.1", backend="reference")
    with pytest.raises(TypeError, match="causal"):
        flashduo.attention(*qkv(), causal=1, backend="reference")


@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device to mix with the CPU")
def test_mixed_devices() -> None:
    q, k, v = qkv()
    with pytest.raises(ValueError, match="one device"):
        flashduo.attention(q, k.cpu(), v, backend="torch")


def test_unknown_backend_lists_registered() -> None:
    with pytest.raises(ValueError, match="registered: .*triton.*torch.*reference"):
        flashduo.attention(*qkv(), backend="nope")
    with pytest.raises(ValueError, match="nope"):
        with flashduo.use_backend("nope"):
            pass


def test_triton_refuses_unsupported_head_dim_and_dtype() -> None:
    if flashduo.get_backend("triton").unavailable():
        pytest.skip(flashduo.get_backend("triton").unavailable())
    with pytest.raises(ValueError, match=r"triton.*head_dim=48 not in"):
        flashduo.attention(*qkv(d=48), backend="triton")
    with pytest.raises(ValueError, match=r"triton.*dtype=float64 not in"):
        flashduo.attention(*qkv(dtype=torch.float64), backend="triton")


@pytest.mark.skipif(triton_interpreting(), reason="the interpreter runs Triton on the CPU")
def test_triton_refuses_cpu_tensors() -> None:
    if not ON_GPU:
        with pytest.raises(ValueError, match="triton"):
            flashduo.attention(*qkv(device="cpu"), backend="triton")
        return
    with pytest.raises(ValueError, match=r"triton.*device=cpu not in \{cuda\}"):
        flashduo.attention(*qkv(device="cpu"), backend="triton")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 2, 16, 16), (1, 2, 0, 16), (1, 2, 16, 0)],
                         ids=["B0", "Nq0", "Nk0"])
def test_empty_inputs(backend, shape) -> None:
    b, h, nq, nk = shape
    q, k, v = (t.requires_grad_() for t in qkv(b=b, hq=h, hkv=h, nq=nq, nk=nk, d=64))
    if flashduo.get_backend(backend).unavailable():
        pytest.skip(flashduo.get_backend(backend).unavailable())
    out, lse = flashduo.attention_with_lse(q, k, v, backend=backend)
    assert out.shape == q.shape and lse.shape == q.shape[:3]
    if nk == 0 and nq > 0:
        assert torch.all(out == 0) and torch.all(lse == float("-inf"))
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in ("torch", "reference")])
def test_nan_and_inf_propagate(backend) -> None:
    """A NaN query row gives a NaN output row (as SDPA on a GPU); other rows stay right."""
    if flashduo.get_backend(backend).unavailable():
        pytest.skip(flashduo.get_backend(backend).unavailable())
    q, k, v = qkv(nq=40, nk=40, d=64, dtype=torch.float16)
    q[0, 0, 5] = float("nan")
    k[0, 1, 7, 0] = float("inf")
    out = flashduo.attention(q, k, v, backend=backend)
    assert torch.isnan(out[0, 0, 5]).all()
    ok = flashduo.attention(q[:, :1, :5], k[:, :1], v[:, :1], backend="reference")
    torch.testing.assert_close(out[:, :1, :5], ok, atol=2e-3, rtol=0)
    assert torch.isnan(out[0, 1]).any()
