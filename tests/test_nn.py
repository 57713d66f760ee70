"""flashduo.nn.MultiheadAttention against torch.nn.MultiheadAttention with the same weights."""

from __future__ import annotations

import copy

import pytest
import torch

import flashduo
from tests.cases import DEVICE, ON_GPU, assert_close

E, H, B, L, S = 128, 2, 2, 9, 13  # head dim 64: every backend takes it
BACKENDS = ["reference", "triton-unfused"] + (["triton", "cuda", "torch"] if ON_GPU else [])
DTYPE = torch.float16 if ON_GPU else torch.float32


def _torch_mha(bias: bool = True, batch_first: bool = True) -> torch.nn.MultiheadAttention:
    """torch's module in float64 with random (never zero) parameters."""
    mha = torch.nn.MultiheadAttention(E, H, bias=bias, batch_first=batch_first, device=DEVICE,
                                      dtype=torch.float64)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(torch.randn(p.shape, generator=g, device=DEVICE, dtype=torch.float64) * E**-0.5)
    return mha


def _inputs(mode: str, batch_first: bool) -> list[torch.Tensor]:
    """query, key, value in float64: one tensor three times for self-attention."""
    g = torch.Generator(device=DEVICE).manual_seed(1)

    def randn(n: int) -> torch.Tensor:
        shape = (n, E) if mode == "unbatched" else (B, n, E) if batch_first else (n, B, E)
        return torch.randn(shape, generator=g, device=DEVICE, dtype=torch.float64)

    if mode == "cross":
        return [randn(L), randn(S), randn(S)]
    x = randn(L)
    return [x, x, x]


def _run(mha: torch.nn.Module, inputs: list[torch.Tensor], causal: bool, dtype: torch.dtype,
         **kwargs) -> list[torch.Tensor]:
    """out and the gradients of the distinct inputs and of the parameters, for one fixed dout."""
    leaves = {id(x): x.detach().to(dtype).requires_grad_() for x in inputs}
    q, k, v = (leaves[id(x)] for x in inputs)
    out, weights = mha(q, k, v, is_causal=causal, **kwargs)
    assert weights is None
    g = torch.Generator(device=DEVICE).manual_seed(2)
    dout = torch.randn(out.shape, generator=g, device=DEVICE, dtype=torch.float64).to(dtype)
    params = [p for _, p in sorted(mha.named_parameters())]
    return [out, *torch.autograd.grad(out, [*leaves.values(), *params], dout)]


def _torch_causal_kwargs(inputs: list[torch.Tensor], batch_first: bool) -> dict:
    """torch wants the mask with its is_causal hint: True above the (top-left) diagonal."""
    seq = 0 if inputs[0].dim() == 2 or not batch_first else 1
    nq, nk = inputs[0].shape[seq], inputs[1].shape[seq]
    mask = torch.ones(nq, nk, dtype=torch.bool, device=DEVICE).triu(1)
    return {"attn_mask": mask, "need_weights": False}


MODES = [
    ("self", False, True), ("self", True, True), ("self", True, False),
    ("cross", False, False), ("cross", True, True), ("unbatched", True, True),
]


@pytest.mark.parametrize("mode, causal, batch_first", MODES,
                         ids=[f"{m}-{'causal' if c else 'full'}-{'bld' if bf else 'lbd'}"
                              for m, c, bf in MODES])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_torch(backend: str, mode: str, causal: bool, batch_first: bool) -> None:
    """Outputs and gradients (inputs and every parameter) within the pass rule of float64 torch."""
    why = flashduo.get_backend(backend).unavailable()
    if why:
        pytest.skip(f"{backend}: {why}")
    truth_mha = _torch_mha(batch_first=batch_first)
    base_mha = copy.deepcopy(truth_mha).to(DTYPE)
    ours = flashduo.nn.MultiheadAttention(E, H, batch_first=batch_first, backend=backend,
                                          device=DEVICE, dtype=DTYPE)
    ours.load_state_dict(base_mha.state_dict())
    inputs = _inputs(mode, batch_first)
    torch_kwargs = _torch_causal_kwargs(inputs, batch_first) if causal else {"need_weights": False}
    truth = _run(truth_mha, inputs, causal, torch.float64, **torch_kwargs)
    base = _run(base_mha, inputs, causal, DTYPE, **torch_kwargs)
    got = _run(ours, inputs, causal, DTYPE)
    assert got[0].shape == truth[0].shape
    for i, (x, ref, b) in enumerate(zip(got, truth, base)):
        assert_close(f"{backend} {mode} #{i}", x, ref, b, "out" if i == 0 else "grad", DTYPE)


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_loads_both_ways(bias: bool) -> None:
    theirs = _torch_mha(bias=bias).float()
    ours = flashduo.nn.MultiheadAttention(E, H, bias=bias, device=DEVICE)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())
    fresh = torch.nn.MultiheadAttention(E, H, bias=bias, batch_first=True, device=DEVICE)
    fresh.load_state_dict(ours.state_dict())
    for (name, p), (_, want) in zip(fresh.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(p, want), name


def test_causal_hint_mask_is_accepted() -> None:
    """torch's calling convention (mask plus is_causal=True) gives plain is_causal's result."""
    mha = flashduo.nn.MultiheadAttention(E, H, backend="reference", device=DEVICE)
    x = torch.randn(B, L, E, device=DEVICE)
    mask = torch.ones(L, L, dtype=torch.bool, device=DEVICE).triu(1)
    torch.testing.assert_close(mha(x, x, x, attn_mask=mask, is_causal=True)[0],
                               mha(x, x, x, is_causal=True)[0], atol=0, rtol=0)


def _masks(kind: str, mode: str, batch_first: bool) -> dict:
    """torch-convention masks for ``_inputs(mode, batch_first)``: key padding (True: a padded
    key), a bool (L, S) mask (True: not allowed), a float (B * H, L, S) one, or both kinds. No
    query is left without a key (torch gives NaN there, flashduo 0)."""
    nk = S if mode == "cross" else L
    g = torch.Generator(device=DEVICE).manual_seed(5)
    pad = torch.zeros(B, nk, dtype=torch.bool, device=DEVICE)
    pad[1, nk - 3:] = True
    keys_out = torch.rand(L, nk, generator=g, device=DEVICE) > 0.6
    keys_out[:, 0] = False
    added = torch.randn(B * H, L, nk, generator=g, device=DEVICE, dtype=torch.float64)
    return {"padding": {"key_padding_mask": pad}, "bool": {"attn_mask": keys_out},
            "float": {"attn_mask": added},
            "padding-and-float": {"key_padding_mask": pad, "attn_mask": added}}[kind]


MASK_KINDS = ["padding", "bool", "float", "padding-and-float"]


@pytest.mark.parametrize("mode", ["self", "cross"])
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_masks_match_torch(kind: str, mode: str) -> None:
    """torch's key_padding_mask / attn_mask conventions, on the backend that takes masks."""
    truth_mha = _torch_mha()
    base_mha = copy.deepcopy(truth_mha).to(DTYPE)
    ours = flashduo.nn.MultiheadAttention(E, H, backend="reference", device=DEVICE, dtype=DTYPE)
    ours.load_state_dict(base_mha.state_dict())
    inputs = _inputs(mode, True)
    masks = _masks(kind, mode, True)
    low = {name: m if m.dtype == torch.bool else m.to(DTYPE) for name, m in masks.items()}
    truth = _run(truth_mha, inputs, False, torch.float64, need_weights=False, **masks)
    base = _run(base_mha, inputs, False, DTYPE, need_weights=False, **low)
    got = _run(ours, inputs, False, DTYPE, **low)
    unmasked = _run(ours, inputs, False, DTYPE)
    assert not torch.allclose(got[0], unmasked[0]), "the masks must change the result"
    for i, (x, ref, b) in enumerate(zip(got, truth, base)):
        assert_close(f"{kind} {mode} #{i}", x, ref, b, "out" if i == 0 else "grad", DTYPE)


def test_masks_on_a_backend_without_them_are_refused_by_name() -> None:
    mha = flashduo.nn.MultiheadAttention(E, H, backend="triton-unfused", device=DEVICE)
    if flashduo.get_backend("triton-unfused").unavailable():
        pytest.skip(flashduo.get_backend("triton-unfused").unavailable())
    x = torch.randn(B, L, E, device=DEVICE)
    pad = torch.zeros(B, L, dtype=torch.bool, device=DEVICE)
    with pytest.raises(ValueError, match=r"attn_mask is not supported \(backends that take it"):
        mha(x, x, x, key_padding_mask=pad)


def test_unsupported_arguments() -> None:
    mha = flashduo.nn.MultiheadAttention(E, H, backend="reference", device=DEVICE)
    x = torch.randn(B, L, E, device=DEVICE)
    with pytest.raises(ValueError, match="need_weights=True is not supported"):
        mha(x, x, x, need_weights=True)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(2, 9\), got \(9,\)"):
        mha(x, x, x, key_padding_mask=torch.zeros(L, dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match=r"attn_mask must have shape \(9, 9\) or \(4, 9, 9\)"):
        mha(x, x, x, attn_mask=torch.ones(2, L, L, dtype=torch.bool, device=DEVICE))
    with pytest.raises(TypeError, match="attn_mask must be bool or floating"):
        mha(x, x, x, attn_mask=torch.ones(L, L, dtype=torch.int32, device=DEVICE))
    with pytest.raises(TypeError, match="is_causal must be a bool"):
        mha(x, x, x, is_causal=1)
    with pytest.raises(ValueError, match="expected embed_dim=128"):
        mha(x, x[..., :64], x[..., :64])
    with pytest.raises(ValueError, match="3-D .* or 2-D"):
        mha(x, x[0], x[0])
    with pytest.raises(ValueError, match="same batch size"):
        mha(x, x[:1], x[:1])
    with pytest.raises(ValueError, match="divisible by num_heads"):
        flashduo.nn.MultiheadAttention(30, 4)
