"""The masking arguments through the front door (``attn_mask``, ``window``, ``softcap``): the
``reference`` backend takes them in forward and backward, eager, through the ops (opcheck) and
under ``torch.compile``; a backend that does not take one (``Backend.masks``) refuses it with a
ValueError naming the argument and the backends that do; bad values are refused by the
validation gate. Runs on the CPU (the kernels' masks: ``test_kernel_masks``)."""

from __future__ import annotations

import pytest
import torch

import flashduo
import reference
from tests.helpers import assert_compiled_matches_eager

B, HQ, HKV, NQ, NK, D = 2, 4, 2, 9, 11, 16


def _inputs(seed: int = 0, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype).requires_grad_()

    return rand(B, HQ, NQ, D), rand(B, HKV, NK, D), rand(B, HKV, NK, D)


def _key_padding() -> torch.Tensor:
    keep = torch.ones(B, 1, 1, NK, dtype=torch.bool)
    keep[1, ..., 7:] = False
    return keep


def _row_blanking() -> torch.Tensor:
    keep = torch.rand(B, HQ, NQ, NK, generator=torch.Generator().manual_seed(3)) > 0.4
    keep[0, 1, 2] = False  # a row that sees no key
    return keep


def _additive() -> torch.Tensor:
    return torch.randn(HQ, NQ, NK, generator=torch.Generator().manual_seed(4))


CASES = {  # name: (causal, masking keywords)
    "key-padding": (False, {"attn_mask": _key_padding()}),
    "rows-blanked": (False, {"attn_mask": _row_blanking()}),
    "additive-causal": (True, {"attn_mask": _additive()}),
    "window": (False, {"window": (2, 1)}),
    "window-causal": (True, {"window": (3, -1)}),
    "softcap": (False, {"softcap": 2.0}),
    "all": (True, {"attn_mask": _key_padding(), "window": (4, 0), "softcap": 1.5}),
}


@pytest.mark.parametrize("name", CASES)
def test_reference_backend_takes_every_mask_forward_and_backward(name: str) -> None:
    causal, masks = CASES[name]
    q, k, v = _inputs()
    out, lse = flashduo.attention_with_lse(q, k, v, causal, backend="reference", **masks)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    plain = [t.detach() for t in (q, k, v)]
    want_out, want_lse = reference.attention_ref(*plain, causal, **masks)
    want_grads = reference.attention_bwd_ref(dout, *plain, causal, **masks)
    torch.testing.assert_close(out, want_out.float())
    torch.testing.assert_close(lse, want_lse.float())
    for got, want in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, want.float())
    assert all(torch.isfinite(g).all() for g in grads)
    unmasked = flashduo.attention(*plain, causal, backend="reference")
    assert not torch.allclose(out, unmasked), "the masks must change the result"
    if name == "rows-blanked":
        assert (out[0, 1, 2] == 0).all() and lse[0, 1, 2] == float("-inf")
        assert (grads[0][0, 1, 2] == 0).all()


MASK_VALUES = {"attn_mask": _key_padding(), "window": (2, 2), "softcap": 3.0}


@pytest.mark.parametrize("backend, keyword", [
    (b, kw) for b in flashduo.registered_backends() for kw in MASK_VALUES
    if kw not in flashduo.get_backend(b).masks])
def test_backends_without_a_mask_refuse_it_by_name(backend: str, keyword: str) -> None:
    why = flashduo.get_backend(backend).unavailable()
    if why:
        pytest.skip(why)
    takers = ", ".join(b for b in flashduo.registered_backends()
                       if keyword in flashduo.get_backend(b).masks)
    q, k, v = (t.detach().half() for t in _inputs())
    with pytest.raises(ValueError, match=rf"{keyword} is not supported \(backends that take it: "
                                         rf"{takers}\)"):
        flashduo.attention(q, k, v, backend=backend, **{keyword: MASK_VALUES[keyword]})


def test_an_unbounded_window_is_no_window() -> None:
    q, k, v = (t.detach() for t in _inputs())
    got = flashduo.attention(q, k, v, True, backend="torch", window=[-1, -1])
    torch.testing.assert_close(got, flashduo.attention(q, k, v, True, backend="torch"))


def test_the_front_door_validates_the_masks() -> None:
    q, k, v = _inputs()
    with pytest.raises(ValueError, match=r"attn_mask of shape \(2, 1, 1, 10\) does not broadcast"):
        flashduo.attention(q, k, v, backend="reference", attn_mask=_key_padding()[..., :10])
    with pytest.raises(ValueError, match=r"window entries must be >= -1"):
        flashduo.attention(q, k, v, backend="reference", window=(-3, 0))
    with pytest.raises(ValueError, match=r"softcap must be a positive finite number"):
        flashduo.attention(q, k, v, backend="reference", softcap=0)
    with pytest.raises(TypeError, match=r"attention\(\) takes from 3 to 9 positional"):
        flashduo.attention(q, k, v, False, None, "reference", None, 1, None, _key_padding())


def test_masked_ops_pass_opcheck() -> None:
    q, k, v = _inputs()
    masks = (_row_blanking(), [3, 1], 2.0)
    out, lse, *_ = torch.ops.flashduo.fwd(q, k, v, True, 0.3, "reference", None, None, 0, True,
                                          *masks)
    dout = torch.randn_like(out)
    saved = [t.detach() for t in (q, k, v, out, lse)]
    torch.library.opcheck(torch.ops.flashduo.fwd.default,
                          (q, k, v, True, 0.3, "reference", None, None, 0, True, *masks))
    torch.library.opcheck(torch.ops.flashduo.bwd.default,
                          (dout, *saved, True, 0.3, "reference", None, None, 0, True, False,
                           *masks))


def test_masked_attention_compiles_fullgraph() -> None:
    causal, masks = CASES["all"]

    def loss(q, k, v, mask):
        out = flashduo.attention(q, k, v, causal, backend="reference", attn_mask=mask,
                                 window=masks["window"], softcap=masks["softcap"])
        return (out * out).sum()

    assert_compiled_matches_eager(lambda q, k, v: loss(q, k, v, masks["attn_mask"]),
                                  _inputs(seed=1), "aot_eager")
