"""Running a backend and the references on one case."""

from __future__ import annotations

import pytest
import torch

import flashduo
from flashduo.backends import INTERPRETER_BF16
from flashduo.registry import triton_interpreting
from reference import passrule
from reference.passrule import KINDS, NAMES
from tests.cases import DEVICE, Case, assert_close, poison_allocator

TRITON_BACKENDS = ("triton", "triton-unfused")
KERNEL_BACKENDS = ("triton", "cuda")  # the two hand-written kernel backends


def varlen_backends(*masks: str) -> list[str]:
    """The kernel backends that run packed sequences (``Backend.fwd_varlen``) with ``masks``."""
    return [b for b in mask_backends(*masks) if flashduo.get_backend(b).fwd_varlen is not None]


def mask_backends(*names: str) -> list[str]:
    """The kernel backends whose ``Backend.masks`` take every masking argument in ``names``: the
    mask tests run on each of them, and on a backend as soon as it declares the argument."""
    return [b for b in KERNEL_BACKENDS if set(names) <= flashduo.get_backend(b).masks]


def skip_if_unavailable(backend: str) -> None:
    """Skip (with the reason) when the backend cannot run on this machine at all."""
    why = flashduo.get_backend(backend).unavailable()
    if why:
        pytest.skip(f"{backend}: {why}")


def skip_if_unrunnable(backend: str, case: Case) -> None:
    """Skip (with the reason) only what this machine cannot run; never on a GPU machine. Under
    the Triton interpreter, bf16 is what the Triton backends refuse (``test_errors`` checks the
    refusal)."""
    skip_if_unavailable(backend)
    if backend in TRITON_BACKENDS and triton_interpreting() and case.dtype == torch.bfloat16:
        pytest.skip(f"{backend} refuses {INTERPRETER_BF16}; bf16 is tested on the GPU")


def run_backend(backend: str, q, k, v, causal: bool, dout: torch.Tensor,
                deterministic: bool | None = None, **masks):
    """out, lse, dq, dk, dv from ``backend``, with NaN-poisoned output buffers; ``masks``: the
    masking keywords (attn_mask, window, softcap)."""
    poison_allocator((q.shape, q.dtype), (q.shape[:3], torch.float32))
    out, lse = flashduo.attention_with_lse(q, k, v, causal=causal, backend=backend,
                                           deterministic=deterministic, **masks)
    poison_allocator(
        (q.shape, q.dtype), (k.shape, k.dtype), (v.shape, v.dtype), (q.shape[:3], torch.float32)
    )
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    return out, lse, dq, dk, dv


def run_reference(q, k, v, causal: bool, dout: torch.Tensor, **masks):
    """(float64 truth, PyTorch-in-input-dtype baseline), each as (out, lse, dq, dk, dv), with
    the masking keywords ``masks``."""
    return passrule.truth_and_baseline(q, k, v, causal, dout, **masks)


def case_inputs(case: Case, seed: int = 0):
    """q, k, v for the case on this machine's device plus a random output gradient."""
    return passrule.case_inputs(case, seed, DEVICE)


def check_case(backend: str, case: Case, deterministic: bool | None = None) -> None:
    """The backend's out, lse and gradients on ``case`` against float64 by the pass rule; a case
    the backend declares unsupported must be refused with a ValueError naming the backend."""
    skip_if_unavailable(backend)
    q, k, v, dout = case_inputs(case)
    reasons = flashduo.get_backend(backend).not_supported_reasons(q, k, v, case.causal)
    if reasons:
        with pytest.raises(ValueError, match=backend):
            flashduo.attention(q, k, v, causal=case.causal, backend=backend)
        return
    got = run_backend(backend, q, k, v, case.causal, dout, deterministic)
    truth, baseline = run_reference(q, k, v, case.causal, dout)
    for name, kind, x, ref, base in zip(NAMES, KINDS, got, truth, baseline):
        assert x.shape == ref.shape, f"{name}: shape {tuple(x.shape)} != {tuple(ref.shape)}"
        assert_close(f"{backend} {name}", x, ref, base, kind, case.dtype, backend)
    assert got[0].dtype == q.dtype and got[1].dtype == torch.float32


def assert_compiled_matches_eager(block, inputs, compiler: str) -> None:
    """``torch.compile(block, fullgraph=True)`` (any graph break fails) gives eager's loss and
    gradients with respect to ``inputs``; ``block`` maps the inputs to a scalar loss."""
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend=compiler)
    loss_c = compiled(*inputs)
    grads_c = torch.autograd.grad(loss_c, inputs)
    loss_e = block(*inputs)
    grads_e = torch.autograd.grad(loss_e, inputs)
    torch.testing.assert_close(loss_c, loss_e)
    for gc, ge in zip(grads_c, grads_e):
        torch.testing.assert_close(gc, ge)
