"""Bad input: a TypeError or ValueError naming the argument, never a crash or a wrong answer."""

from __future__ import annotations

import math

import pytest
import torch

import flashduo
from flashduo.backends import INTERPRETER_BF16
from flashduo.registry import triton_interpreting
from tests.cases import DEVICE, ON_GPU

BACKENDS = flashduo.registered_backends()


def qkv(b=1, hq=2, hkv=2, nq=16, nk=16, d=32, dtype=torch.float16, device=DEVICE):
    q = torch.randn(b, hq, nq, d, device=device).to(dtype)
    k = torch.randn(b, hkv, nk, d, device=device).to(dtype)
    v = torch.randn(b, hkv, nk, d, device=device).to(dtype)
    return q, k, v


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
def test_bad_shapes_and_dtypes(mutate, exc, match) -> None:
    """The front door checks the arguments before it picks a backend: no backend runs."""
    q, k, v = mutate(*qkv())
    with pytest.raises(exc, match=match):
        flashduo.attention(q, k, v)


def test_bad_rope_arguments() -> None:
    q, k, v = qkv(nq=5, nk=5, d=32)
    table = flashduo.CosSinTable(100.0, 2, 32, device=DEVICE)
    with pytest.raises(TypeError, match="rope must be a CosSinTable"):
        flashduo.attention(q, k, v, rope="table")
    with pytest.raises(ValueError, match="num_prefix_tokens must be an int >= 0"):
        flashduo.attention(q, k, v, rope=table, num_prefix_tokens=-1)
    with pytest.raises(ValueError, match="q has N=5 tokens = 0 prefix"):
        flashduo.attention(q, k, v, rope=table, num_prefix_tokens=0)
    with pytest.raises(ValueError, match="k has N=6 tokens"):
        flashduo.attention(q, *qkv(nq=6, nk=6, d=32)[1:], rope=table)
    with pytest.raises(ValueError, match="rope table is for D=32, q has D=64"):
        flashduo.attention(*qkv(nq=5, nk=5, d=64), rope=table)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_bad_scale(scale) -> None:
    with pytest.raises(ValueError, match="scale must be a positive finite"):
        flashduo.attention(*qkv(), scale=scale, backend="reference")


def test_bad_scale_type_and_causal() -> None:
    with pytest.raises(TypeError, match="scale"):
        flashduo.attention(*qkv(), scale="0.1", backend="reference")
    with pytest.raises(TypeError, match="causal"):
        flashduo.attention(*qkv(), causal=1, backend="reference")


def test_bad_deterministic(monkeypatch) -> None:
    with pytest.raises(TypeError, match="deterministic must be a bool or None, got str"):
        flashduo.attention(*qkv(), deterministic="no", backend="reference")
    monkeypatch.setenv("FLASHDUO_DETERMINISTIC", "maybe")
    with pytest.raises(ValueError, match="FLASHDUO_DETERMINISTIC must be one of .*'maybe'"):
        flashduo.attention(*qkv(), backend="reference")


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


@pytest.mark.parametrize("backend", ["triton", "triton-unfused"])
def test_triton_refuses_bf16_under_the_interpreter(backend: str, monkeypatch) -> None:
    """The interpreter's bf16 dots are wrong: the Triton backends refuse bf16 there, saying why,
    instead of returning wrong numbers."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v = qkv(dtype=torch.bfloat16, d=64)
    reasons = flashduo.get_backend(backend).not_supported_reasons(q, k, v, False)
    assert INTERPRETER_BF16 in reasons
    with pytest.raises(ValueError, match=rf"{backend}.*bfloat16 under the Triton interpreter"):
        flashduo.attention(q, k, v, backend=backend)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert INTERPRETER_BF16 not in flashduo.get_backend(backend).not_supported_reasons(q, k, v, False)


def test_cuda_refusals() -> None:
    """What the CUDA kernels cannot take is refused at the front door with a ValueError giving
    each reason (on any machine: where no GPU is visible, that is one more reason)."""
    cases = [(qkv(d=48), r"head_dim=48 not in \{64, 96, 128, 256\}"),
             (qkv(d=64, dtype=torch.float32), r"dtype=float32 not in \{bfloat16, float16\}"),
             (qkv(d=64, device="cpu"), r"device=cpu not in \{cuda\}")]
    for (q, k, v), match in cases:
        with pytest.raises(ValueError, match=rf"backend 'cuda' cannot run these inputs: .*{match}"):
            flashduo.attention(q, k, v, backend="cuda")


@pytest.mark.skipif(not ON_GPU, reason="the head-dim limits of cuda depend on the GPU")
def test_cuda_refuses_hopper_head_dims_without_hopper(monkeypatch) -> None:
    """Head dims 96 and 256 need the Hopper kernels: refused at the front door with the reason
    when the GPU is not sm_90 or FLASHDUO_CUDA_ARCH=sm80 turns them off."""
    monkeypatch.setenv("FLASHDUO_CUDA_ARCH", "sm80")
    for d in (96, 256):
        q, k, v = qkv(d=d, dtype=torch.bfloat16)
        with pytest.raises(ValueError, match=rf"cuda.*head_dim={d} needs the Hopper kernels"):
            flashduo.attention(q, k, v, backend="cuda")
    monkeypatch.delenv("FLASHDUO_CUDA_ARCH")
    reasons = flashduo.get_backend("cuda").not_supported_reasons(q, k, v, False)
    if torch.cuda.get_device_capability() == (9, 0):
        assert reasons == []
    else:
        assert any("needs the Hopper kernels (an sm_90 GPU)" in r for r in reasons)


@pytest.mark.skipif(triton_interpreting(), reason="the interpreter runs Triton on the CPU")
def test_triton_refuses_cpu_tensors() -> None:
    if not ON_GPU:
        with pytest.raises(ValueError, match="triton"):
            flashduo.attention(*qkv(device="cpu"), backend="triton")
        return
    with pytest.raises(ValueError, match=r"triton.*device=cpu not in \{cuda\}"):
        flashduo.attention(*qkv(device="cpu"), backend="triton")


@pytest.mark.parametrize("shape", [(0, 2, 16, 16), (1, 2, 0, 16), (1, 2, 16, 0)],
                         ids=["B0", "Nq0", "Nk0"])
def test_empty_inputs(shape) -> None:
    """Empty problems are answered by the op layer, whichever backend is chosen: no kernel runs."""
    b, h, nq, nk = shape
    q, k, v = (t.requires_grad_() for t in qkv(b=b, hq=h, hkv=h, nq=nq, nk=nk, d=64))
    out, lse = flashduo.attention_with_lse(q, k, v)
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
