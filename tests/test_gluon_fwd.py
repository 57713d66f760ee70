"""The Gluon forward (``triton_impl.gluon_fwd``, head dims 64 and 128 on Hopper) against the
float64 reference, in the layouts it reads (contiguous, SDPA's (B, N, H, D) memory, timm's packed
qkv), with GQA and the causal mask; which calls it takes; and the forward's choice between it and the
Triton kernel. Outputs are NaN-poisoned first. Without a Hopper GPU these tests skip (the CPU
run has no Gluon)."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.cases import ON_GPU, assert_close, poison_allocator
from tests.helpers import run_reference

HOPPER = ON_GPU and torch.cuda.get_device_capability() == (9, 0)
needs_hopper = pytest.mark.skipif(not HOPPER, reason="the Gluon forward runs on Hopper GPUs only")

# (B, Hq, Hkv, N, layout, D); the causal grids' sections hold 16 heads at N = 1024 (2 with
# persistent programs), so (3, 7, 7, 1024) ends with a section of 5 heads (of 1)
SHAPES = [(2, 2, 2, 128, "bhnd", 128), (1, 4, 2, 384, "bnhd", 128), (2, 3, 3, 256, "qkv", 128),
          (1, 2, 1, 1024, "bhnd", 128), (2, 2, 2, 128, "bhnd", 64), (1, 4, 2, 384, "bnhd", 64),
          (2, 3, 3, 256, "qkv", 64), (3, 7, 7, 1024, "bhnd", 64)]


def _inputs(b: int, hq: int, hkv: int, n: int, layout: str, dtype: torch.dtype, d: int = 128,
            seed: int = 0):
    """q (B, Hq, N, D), k, v (B, Hkv, N, D) in ``layout``'s memory, and a dout."""
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device="cuda", dtype=dtype)

    if layout == "bhnd":
        q, k, v = rand(b, hq, n, d), rand(b, hkv, n, d), rand(b, hkv, n, d)
    elif layout == "bnhd":
        q, k, v = (rand(b, n, h, d).transpose(1, 2) for h in (hq, hkv, hkv))
    else:  # timm's fused projection: (B, N, 3, H, D) viewed as three (B, H, N, D)
        q, k, v = rand(b, n, 3, hq, d).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v, rand(b, hq, n, d)


@needs_hopper
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}-h{}-{}-n{}-{}-d{}".format(*s))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("persistent", [False, True, 3], ids=["tiles", "persistent", "3-programs"])
def test_gluon_forward_matches_reference(shape: tuple, causal: bool, dtype: torch.dtype,
                                         persistent: bool | int) -> None:
    """One program a query tile, one an SM, and three programs for all tiles (each then runs
    many tiles: the K / V rings wrap and the Q slot pairs alternate across heads and sections)."""
    from triton_impl import gluon_fwd

    b, hq, hkv, n, layout, d = shape
    q, k, v, dout = _inputs(b, hq, hkv, n, layout, dtype, d)
    assert gluon_fwd.usable(q, k, v)
    poison_allocator(((b, n, hq, d), dtype), ((b, hq, n), torch.float32))
    out, lse = gluon_fwd.attention_fwd(q, k, v, causal, d ** -0.5, persistent)
    truth, baseline = run_reference(q, k, v, causal, dout)
    assert_close("gluon out", out, truth[0], baseline[0], "out", dtype)
    assert_close("gluon lse", lse, truth[1], baseline[1], "lse", dtype)


def test_causal_sections() -> None:
    """Heads a causal section: about SECTION_CTAS query tiles with one program a tile, about
    PERSISTENT_SECTION_CTAS with persistent programs; at least one head, at most all of them."""
    from triton_impl import gluon_fwd

    assert gluon_fwd._section(1024, 256, False) == gluon_fwd.SECTION_CTAS // 8
    assert gluon_fwd._section(1024, 256, True) == gluon_fwd.PERSISTENT_SECTION_CTAS // 8
    assert gluon_fwd._section(1024, 3, False) == 3
    assert gluon_fwd._section(65536, 4, True) == gluon_fwd._section(65536, 4, False) == 1


@needs_hopper
def test_gluon_usable_only_where_it_can_run() -> None:
    from triton_impl import gluon_fwd

    q, k, v, _ = _inputs(2, 2, 2, 256, "bhnd", torch.bfloat16)
    assert gluon_fwd.usable(q, k, v)
    # every other row: still one matrix of rows (row stride 2 D)
    assert gluon_fwd.usable(q[:, :, ::2], k[:, :, ::2], v[:, :, ::2])
    refused = {
        "head dim 96": (q[..., :96], k[..., :96], v[..., :96]),
        "N not a multiple of 128": (q[:, :, :200], k[:, :, :200], v[:, :, :200]),
        "Nq != Nk": (q[:, :, :128], k, v),
        "float32": (q.float(), k.float(), v.float()),
        "batch and heads swapped": (q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)),
    }
    for why, args in refused.items():
        assert not gluon_fwd.usable(*args), why


@needs_hopper
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_forward_choice_gives_the_reference(causal: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tuned (as in the benchmark), the forward times the kernels once per shape class and runs
    the fastest; forced either way, both agree with the reference."""
    from triton_impl import fwd, launched_configs

    monkeypatch.setenv("FLASHDUO_AUTOTUNE", "1")
    monkeypatch.setattr(fwd, "_GLUON_CHOSEN", {})
    q, k, v, dout = _inputs(2, 2, 2, 512, "bnhd", torch.bfloat16)
    truth, baseline = run_reference(q, k, v, causal, dout)
    for gluon in (None, True, False):
        out, lse = fwd.attention_fwd(q, k, v, causal, 128 ** -0.5, gluon=gluon)
        assert_close(f"gluon={gluon} out", out, truth[0], baseline[0], "out", torch.bfloat16)
        assert_close(f"gluon={gluon} lse", lse, truth[1], baseline[1], "lse", torch.bfloat16)
        chosen = fwd._GLUON_CHOSEN[(512, 128, causal, torch.bfloat16)]
        assert ("gluon" in launched_configs()["fwd"]) is (
            chosen is not None if gluon is None else gluon)
    with pytest.raises(ValueError, match="gluon=True"):
        fwd.attention_fwd(q[..., :96], k[..., :96], v[..., :96], causal, 0.1, gluon=True)


@needs_hopper
def test_gluon_forward_then_backward_through_the_front_door(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the forward is the Gluon kernel (untuned, it is wherever usable), flashduo's backward
    takes its out and lse: gradients by the pass rule for each combination of causal and
    layout."""
    import flashduo
    from triton_impl import fwd, launched_configs

    monkeypatch.setenv("FLASHDUO_AUTOTUNE", "0")
    monkeypatch.setattr(fwd, "_GLUON_CHOSEN", {})

    for causal, layout in itertools.product((False, True), ("bhnd", "qkv")):
        q, k, v, dout = _inputs(1, 2, 2, 256, layout, torch.bfloat16, 64 if causal else 128,
                                seed=1)
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        out = flashduo.attention(q, k, v, causal=causal, backend="triton")
        assert "gluon" in launched_configs()["fwd"]
        grads = torch.autograd.grad(out, (q, k, v), dout)
        truth, baseline = run_reference(q.detach(), k.detach(), v.detach(), causal, dout)
        assert_close("out", out, truth[0], baseline[0], "out", torch.bfloat16)
        for name, got, ref, base in zip(("dq", "dk", "dv"), grads, truth[2:], baseline[2:]):
            assert_close(f"{layout} causal={causal} {name}", got, ref, base, "grad",
                         torch.bfloat16, "triton")


def test_descriptor_without_checks_equals_the_constructor() -> None:
    """``_descriptor`` fills a TensorDescriptor without its constructor's checks where its fields
    are the known ones (Triton 3.6's; other releases take the constructor): the same fields as
    the constructor's, which must still accept them."""
    from triton_impl import gluon_fwd

    if gluon_fwd.gluon is None:
        pytest.skip("this Triton has no Gluon Hopper API")
    t = torch.randn(4, 256, 128, dtype=torch.bfloat16)
    fast = gluon_fwd._descriptor(t, 1024, 128, 128, (64, 128))
    checked = gluon_fwd.TensorDescriptor(t, [1024, 128], [128, 1], [64, 128], fast.layout)
    fields = tuple(gluon_fwd.TensorDescriptor.__dataclass_fields__)
    assert gluon_fwd._bare_descriptors() is (fields == gluon_fwd._DESCRIPTOR_FIELDS), fields
    assert fast == checked and type(fast) is type(checked)
