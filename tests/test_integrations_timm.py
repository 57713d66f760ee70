"""flashduo.integrations.timm.patch: a patched timm rope ViT gives the unpatched model's logits and
gradients (skipped where timm is not installed)."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from flashduo.integrations import timm as fti
from tests.cases import DEVICE, ON_GPU

pytestmark = pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                                reason="timm is not installed")


def _model(name: str = "vit_small_patch16_rope_224"):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, depth=2).to(DEVICE)
    with torch.no_grad():  # layer scales start at 1e-5, which would hide the attention
        for pname, p in model.named_parameters():
            if "gamma" in pname:
                p.fill_(0.5)
    return model


@pytest.mark.parametrize("backend", ["reference", "triton"] if ON_GPU else ["reference"])
def test_patched_model_matches_timm(backend, monkeypatch) -> None:
    model = _model()
    patched = fti.patch(copy.deepcopy(model), backend=backend)
    calls = []
    for name in ("attention", "attention_qkvpacked"):  # packed: no q / k norm in this model
        real = getattr(fti.flashduo, name)
        monkeypatch.setattr(fti.flashduo, name,
                            lambda *a, _real=real, _name=name, **kw: calls.append(_name)
                            or _real(*a, **kw))
    x = torch.randn(2, 3, 224, 224, device=DEVICE)
    outs, grads = [], []
    for m in (model, patched):
        m.zero_grad()
        y = m.forward_features(x)
        y.square().mean().backward()
        outs.append(y.detach())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    scale = outs[0].abs().max()
    torch.testing.assert_close(outs[1], outs[0], atol=1e-4 * scale, rtol=0)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4 * grads[0].abs().max(), rtol=0)
    # one packed flashduo call per block (depth 2), none for the unpatched model
    assert calls == ["attention_qkvpacked"] * 2


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_a_mask_reaches_flashduo_where_the_backend_takes_it(backend, monkeypatch) -> None:
    """A masked call goes through flashduo where the backend takes ``attn_mask`` (reference)
    and falls back to timm's forward where it does not (torch); the same result either way."""
    model = fti.patch(_model(), backend=backend)
    attn = model.blocks[0].attn
    assert attn.forward.__func__ is fti._flash_forward
    calls = []
    real = fti.flashduo.attention_qkvpacked
    monkeypatch.setattr(fti.flashduo, "attention_qkvpacked",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    x = torch.randn(1, 197, 384, device=DEVICE)
    rope = model.rope.get_embed()
    mask = torch.ones(197, 197, dtype=torch.bool, device=DEVICE)
    mask[:, 150:] = False
    torch.testing.assert_close(attn(x, rope=rope, attn_mask=mask),
                               attn._flashduo_original_forward(x, rope=rope, attn_mask=mask))
    assert calls == ([1] if backend == "reference" else [])


@pytest.mark.parametrize("backend", ["reference", "triton"] if ON_GPU else ["reference"])
def test_key_padding_mask_matches_timm_forward_and_backward(backend) -> None:
    """NaFlex-style key padding ((B, 1, 1, N) bool, each image's padded tokens left out) through a
    patched block: the block's output and its gradients equal timm's own masked attention."""
    model = _model()
    patched = fti.patch(copy.deepcopy(model), backend=backend)
    rope = model.rope.get_embed()
    x = torch.randn(2, 197, 384, device=DEVICE)
    keep = torch.ones(2, 1, 1, 197, dtype=torch.bool, device=DEVICE)
    keep[1, ..., 120:] = False
    outs, grads = [], []
    for m in (model, patched):
        xi = x.clone().requires_grad_()
        y = m.blocks[0].attn(xi, rope=rope, attn_mask=keep)
        y.square().mean().backward()
        outs.append(y.detach())
        grads.append(xi.grad)
    scale = outs[0].abs().max()
    torch.testing.assert_close(outs[1], outs[0], atol=1e-4 * scale, rtol=0)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4 * grads[0].abs().max(), rtol=0)


def test_patch_needs_rope_attention() -> None:
    with pytest.raises(ValueError, match="no AttentionRope / EvaAttention module"):
        fti.patch(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="not registered"):
        fti.patch(_model(), backend="nope")
