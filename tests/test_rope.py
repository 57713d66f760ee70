"""2D axial RoPE: the reference against an independent complex-number form and against timm, and
``attention(..., rope=table)`` on every backend against float64 RoPE + float64 attention."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

import flashduo
import reference
from reference.passrule import KINDS, NAMES
from tests.cases import DEVICE, ON_GPU, Case, assert_close
from tests.helpers import assert_compiled_matches_eager, skip_if_unrunnable

GRIDS = [(7, 7), (14, 14), (16, 16), (6, 10)]


def _complex_rope(x: torch.Tensor, h_img: int, w_img: int, base: float, prefix: int):
    """RoPE written as multiplication of channel pairs by exp(i theta), in float64."""
    d = x.shape[-1]
    quarter = d // 4
    bands = torch.tensor([base ** (-j / quarter) for j in range(quarter)], dtype=torch.float64)
    pos = torch.arange(h_img * w_img)
    theta = torch.cat([(pos % w_img)[:, None] * bands, (pos // w_img)[:, None] * bands], dim=1)
    grid = x[..., prefix:, :].double().reshape(*x.shape[:-2], h_img * w_img, d // 2, 2)
    z = torch.view_as_complex(grid.contiguous()) * torch.polar(torch.ones_like(theta), theta)
    rotated = torch.view_as_real(z).flatten(-2)
    return torch.cat([x[..., :prefix, :].double(), rotated], dim=-2)


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("prefix", [0, 1, 5])
def test_reference_matches_complex_form(grid, prefix) -> None:
    h_img, w_img = grid
    table = reference.CosSinTable(base=100.0, H_img=h_img, D=32, W_img=w_img)
    x = torch.randn(2, 3, prefix + h_img * w_img, 32, dtype=torch.float64)
    got = reference.apply_rope(x, table, prefix)
    want = _complex_rope(x, h_img, w_img, 100.0, prefix)
    # The table is float32, so angles carry ~1e-7 relative rounding.
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    assert torch.equal(got[..., :prefix, :], x[..., :prefix, :])


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_matches_timm_rope_vit() -> None:
    """Our table equals timm's vit_small_patch16_rope_224 embedding; our rotation equals timm's."""
    import timm
    from timm.layers import apply_rot_embed_cat

    model = timm.create_model("vit_small_patch16_rope_224", pretrained=False)
    emb = model.rope.get_embed()
    ours = reference.CosSinTable(base=100.0, H_img=14, D=64)
    theirs = reference.CosSinTable.from_timm(model.rope)
    torch.testing.assert_close(ours.COSP, theirs.COSP, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.SINP, theirs.SINP, atol=1e-6, rtol=0)
    prefix = model.num_prefix_tokens
    q = torch.randn(2, 6, prefix + 196, 64)
    want = torch.cat([q[:, :, :prefix], apply_rot_embed_cat(q[:, :, prefix:], emb)], dim=2)
    got = reference.apply_rope(q, ours, prefix)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def _rope_case_inputs(dtype, grid, prefix, hq=4, hkv=2, d=64, seed=0, b=2):
    n = prefix + grid[0] * grid[1]
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q, k, v, dout = (torch.randn(b, h, n, d, generator=g, device=DEVICE).to(dtype)
                     for h in (hq, hkv, hkv, hq))
    return [t.requires_grad_() for t in (q, k, v)] + [dout]


# (grid, prefix, causal, head dim, batch). Under the interpreter the grids stay small (each case
# still spans several query and key tiles of its 32 x 16 config, with ragged tails); on a GPU the
# ViT grids, D = 96, 128, 256, and batch 72, which gives 288 (batch, head) pairs, enough for the CUDA
# forward's short-sequence kernel.
ROPE_CASES = [((7, 7), 1, False, 64, 2), ((6, 10), 4, False, 64, 2), ((5, 8), 0, True, 64, 2),
              ((9, 9), 1, True, 64, 2)]
if ON_GPU:
    ROPE_CASES += [((14, 14), 1, False, 64, 2), ((16, 16), 0, True, 64, 2),
                   ((14, 14), 0, True, 64, 2), ((14, 14), 1, False, 128, 2),
                   ((24, 24), 1, True, 128, 2), ((14, 14), 1, False, 64, 72),
                   ((16, 16), 1, True, 64, 72), ((6, 10), 4, False, 64, 72),
                   ((9, 9), 1, True, 96, 2), ((6, 10), 2, False, 256, 2)]


def _case_id(c) -> str:
    return f"{c[0][0]}x{c[0][1]}-p{c[1]}-c{int(c[2])}-d{c[3]}-b{c[4]}"


# The reference backend is what every result is compared with; ``torch`` covers the op layer's
# rotation for backends without fused RoPE.
ROPE_BACKENDS = [b for b in flashduo.registered_backends() if b != "reference"]


@pytest.mark.parametrize("case", ROPE_CASES, ids=_case_id)
@pytest.mark.parametrize("backend", ROPE_BACKENDS)
def test_attention_with_rope(backend, case) -> None:
    """out, lse and dq, dk, dv against float64 RoPE then float64 attention, by the common pass
    rule; ``triton`` and ``cuda`` rotate inside their kernels, the others get q, k rotated by the
    op layer."""
    _check_rope(backend, case, deterministic=True)


@pytest.mark.parametrize("case", ROPE_CASES, ids=_case_id)
def test_cuda_atomic_backward_with_rope(case) -> None:
    """cuda's atomic backward (deterministic=False on Hopper at D = 64, 128: dq added with fp32
    bulk reductions against the rotated k, turned back at the end) by the same rule."""
    _check_rope("cuda", case, deterministic=False)


def _check_rope(backend: str, case, deterministic: bool) -> None:
    grid, prefix, causal, d, b = case
    dtype = torch.bfloat16 if ON_GPU else torch.float16
    skip_if_unrunnable(backend, Case(2, 4, 2, 1, 1, d, dtype, causal))
    q, k, v, dout = _rope_case_inputs(dtype, grid, prefix, d=d, b=b)
    table = reference.CosSinTable(100.0, grid[0], d, device=DEVICE, W_img=grid[1])
    out, lse = flashduo.attention_with_lse(q, k, v, causal=causal, backend=backend, rope=table,
                                           num_prefix_tokens=prefix, deterministic=deterministic)
    grads = torch.autograd.grad(out, (q, k, v), dout)

    def truth_and_baseline(upcast: bool):
        xs = [t.detach().double() if upcast else t.detach() for t in (q, k, v)]
        xs = [x.requires_grad_() for x in xs]
        qr, kr = (reference.apply_rope(x, table, prefix) for x in xs[:2])
        o, lse_ref = reference.attention_ref(qr, kr, xs[2], causal, 1 / math.sqrt(d), upcast=upcast)
        return (o, lse_ref, *torch.autograd.grad(o, xs, dout.to(o.dtype)))

    truth, base = truth_and_baseline(True), truth_and_baseline(False)
    for name, kind, x, ref, bl in zip(NAMES, KINDS, (out, lse, *grads), truth, base):
        assert_close(f"{backend} rope {name}", x, ref, bl, kind, dtype, backend)


def test_rope_errors() -> None:
    table = reference.CosSinTable(100.0, 4, 16)
    q = torch.randn(1, 2, 17, 16)
    with pytest.raises(ValueError, match="divisible by 4"):
        reference.CosSinTable(100.0, 4, 18)
    with pytest.raises(ValueError, match=r"N=18 tokens = 1 prefix \+ 17.*4x4 grid = 16"):
        flashduo.attention(torch.randn(1, 2, 18, 16), q[:, :, :1].expand(1, 2, 18, 16),
                           torch.randn(1, 2, 18, 16), rope=table, backend="reference")
    with pytest.raises(ValueError, match="rope table is for D=16, q has D=32"):
        x = torch.randn(1, 2, 17, 32)
        flashduo.attention(x, x, x, rope=table, backend="reference")
    with pytest.raises(TypeError, match="rope must be a CosSinTable"):
        flashduo.attention(q, q, q, rope=(table.COSP, table.SINP), backend="reference")
    with pytest.raises(ValueError, match="num_prefix_tokens must be an int >= 0"):
        flashduo.attention(q, q, q, rope=table, num_prefix_tokens=-1, backend="reference")
    with pytest.raises(ValueError, match="rope table is on meta, q on cpu"):
        flashduo.attention(q, q, q, rope=table.to("meta"), backend="reference")


def test_rope_compiles_fullgraph() -> None:
    """attention(..., rope=table) inside torch.compile(fullgraph=True) equals eager, grads too."""
    backend, compiler = ("triton", "inductor") if ON_GPU else ("reference", "aot_eager")
    dtype = torch.bfloat16 if ON_GPU else torch.float32
    table = reference.CosSinTable(100.0, 7, 64, device=DEVICE)

    def block(q, k, v):
        out = flashduo.attention(q, k, v, backend=backend, rope=table, num_prefix_tokens=1)
        return out.float().square().sum()

    q, k, v, _ = _rope_case_inputs(dtype, (7, 7), 1)
    assert_compiled_matches_eager(block, (q, k, v), compiler)


@pytest.mark.parametrize("has_cls", [True, False])
def test_sdpa_triton_fa_rope(has_cls: bool) -> None:
    """The seed-compatible entry point: the CLS token (has_cls) left unrotated, the grid rotated;
    output and gradients as float64 RoPE + attention; a table for another grid is refused."""
    dtype = torch.bfloat16 if ON_GPU else torch.float16
    skip_if_unrunnable("triton", Case(2, 4, 2, 1, 1, 64, dtype, True))
    prefix = int(has_cls)
    q, k, v, dout = _rope_case_inputs(dtype, (4, 5), prefix, d=64, seed=5)
    table = reference.CosSinTable(100.0, 4, 64, device=DEVICE, W_img=5)
    out = flashduo.sdpa_triton_fa_rope(q, k, v, table, causal=True, sm_scale=0.3,
                                       has_cls=has_cls)
    grads = torch.autograd.grad(out, (q, k, v), dout)

    def run(upcast: bool):
        xs = [(t.detach().double() if upcast else t.detach()).requires_grad_() for t in (q, k, v)]
        qr, kr = (reference.apply_rope(x, table, prefix) for x in xs[:2])
        o = reference.attention_ref(qr, kr, xs[2], True, 0.3, upcast=upcast)[0]
        return (o, *torch.autograd.grad(o, xs, dout.to(o.dtype)))

    truth, base = run(True), run(False)
    for name, kind, x, ref, bl in zip(("out", "dq", "dk", "dv"), ("out", "grad", "grad", "grad"),
                                      (out, *grads), truth, base):
        assert_close(f"sdpa_triton_fa_rope {name}", x, ref, bl, kind, dtype)
    other = reference.CosSinTable(100.0, 5, 64, device=DEVICE)
    with pytest.raises(ValueError, match="grid"):
        flashduo.sdpa_triton_fa_rope(q, k, v, other, has_cls=has_cls)


@pytest.mark.parametrize("backend", ["reference", "triton", "cuda"] if ON_GPU else ["reference"])
def test_rope_opcheck(backend) -> None:
    """The ops' schema, fake and autograd registrations hold with the rope tables passed."""
    dtype = torch.bfloat16 if ON_GPU else torch.float32
    q, k, v, dout = _rope_case_inputs(dtype, (7, 7), 1)
    table = reference.CosSinTable(100.0, 7, 64, device=DEVICE)
    rope_args = (table.COSP, table.SINP, 1)
    torch.library.opcheck(torch.ops.flashduo.fwd.default, (q, k, v, True, 0.2, backend, *rope_args))
    out, lse, *_ = torch.ops.flashduo.fwd(q, k, v, True, 0.2, backend, *rope_args)
    saved = [t.detach() for t in (q, k, v, out, lse)]
    torch.library.opcheck(torch.ops.flashduo.bwd.default,
                          (dout, *saved, True, 0.2, backend, *rope_args))
