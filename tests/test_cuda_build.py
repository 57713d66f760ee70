"""The CUDA extension: it compiles, links and imports wherever the toolkit and a CUDA build of
torch are (CI included); on a GPU its forward matches the float64 reference by the pass rule."""

from __future__ import annotations

import pytest
import torch

import reference
from bindings import flash, loader
from flashduo.backends import cuda_toolchain_missing
from tests.cases import ON_GPU, assert_close
from tests.helpers import run_reference


@pytest.fixture(scope="module")
def ext():
    why = cuda_toolchain_missing()
    if why:
        pytest.skip(why)
    return loader.load()


def test_extension_builds_and_imports(ext) -> None:
    assert "FlashAttention forward" in ext.fwd.__doc__
    assert "FlashAttention backward" in ext.bwd.__doc__


def test_build_cache_is_per_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Two checkouts get two build folders (their build files name their own sources); one
    checkout gets the same folder every time, so it reuses its build."""
    from bindings import sources

    monkeypatch.setenv("FLASHDUO_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(sources, "ROOT", tmp_path / "clone-a")
    first = loader.build_dir("9.0")
    assert loader.build_dir("9.0") == first
    monkeypatch.setattr(sources, "ROOT", tmp_path / "clone-b")
    assert loader.build_dir("9.0") != first
    assert loader.build_dir("9.0").parent == first.parent == tmp_path


FWD_CASES = [
    # (b, hq, hkv, nq, nk, d, dtype, causal)
    (2, 4, 4, 197, 197, 64, torch.bfloat16, False),
    (2, 4, 4, 197, 197, 64, torch.float16, True),
    (1, 8, 2, 113, 1025, 128, torch.bfloat16, False),
    (1, 4, 1, 1025, 1023, 128, torch.float16, True),
    (2, 2, 2, 1, 17, 64, torch.bfloat16, True),
    (2, 2, 2, 203, 17, 128, torch.bfloat16, True),
    (48, 6, 6, 197, 197, 64, torch.bfloat16, False),  # the short-sequence kernel
]


def _case_id(c: tuple) -> str:
    causal = "causal" if c[7] else "full"
    return f"b{c[0]}h{c[1]}x{c[2]}q{c[3]}k{c[4]}d{c[5]}-{str(c[6])[6:]}-{causal}"


# Head dims only the Hopper forward has.
HOPPER_CASES = [
    (2, 4, 2, 197, 203, 96, torch.bfloat16, False),
    (1, 4, 4, 333, 333, 96, torch.float16, True),
    (2, 2, 1, 150, 77, 256, torch.bfloat16, True),
    (1, 2, 2, 1, 300, 256, torch.float16, False),
]


def _hopper_gpu() -> bool:
    return ON_GPU and torch.cuda.get_device_capability() == (9, 0)


def _forward_case(ext, case, arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run case through the forward FLASHDUO_CUDA_ARCH=arch selects and apply the pass rule."""
    if arch == "sm90" and not _hopper_gpu():
        pytest.skip("the Hopper forward needs an sm_90 GPU")
    monkeypatch.setenv("FLASHDUO_CUDA_ARCH", arch)
    assert ext.hopper_forward() == (arch == "sm90")
    b, hq, hkv, nq, nk, d, dtype, causal = case
    g = torch.Generator(device="cuda").manual_seed(nq * 7 + nk)
    q = torch.randn(b, hq, nq, d, generator=g, device="cuda").to(dtype)
    kv = torch.randn(b, nk, 2, hkv, d, generator=g, device="cuda").to(dtype)
    k, v = (t.transpose(1, 2) for t in kv.unbind(2))  # strided views of a packed projection
    scale = d**-0.5
    out, lse = flash.fwd(q, k, v, causal, scale)
    ref_out, ref_lse = reference.attention_ref(q, k, v, causal, scale)
    base_out, base_lse = reference.attention_ref(q, k, v, causal, scale, upcast=False)
    assert_close(f"cuda {arch} out", out, ref_out, base_out, "out", dtype)
    assert_close(f"cuda {arch} lse", lse, ref_lse, base_lse, "lse", dtype)


@pytest.mark.skipif(not ON_GPU, reason="running the CUDA kernels needs a CUDA GPU")
@pytest.mark.parametrize("arch", ["sm80", "sm90"])
@pytest.mark.parametrize("case", FWD_CASES, ids=_case_id)
def test_cuda_forward_matches_reference(ext, case, arch, monkeypatch) -> None:
    """Both CUDA forwards (mma.sync, forced by FLASHDUO_CUDA_ARCH=sm80; Hopper) on each case."""
    _forward_case(ext, case, arch, monkeypatch)


@pytest.mark.skipif(not ON_GPU, reason="running the CUDA kernels needs a CUDA GPU")
@pytest.mark.parametrize("case", HOPPER_CASES, ids=_case_id)
def test_hopper_forward_head_dims(ext, case, monkeypatch) -> None:
    """D = 96 and 256, which only the Hopper forward serves."""
    _forward_case(ext, case, "sm90", monkeypatch)


ROPE_CASES = [  # (arch, d, grid, prefix, causal)
    ("sm80", 64, (7, 7), 1, False), ("sm80", 128, (6, 10), 3, True),
    ("sm90", 64, (7, 7), 1, False), ("sm90", 128, (6, 10), 3, True),
    ("sm90", 96, (9, 9), 1, True), ("sm90", 256, (5, 12), 2, False),
]


@pytest.mark.skipif(not ON_GPU, reason="running the CUDA kernels needs a CUDA GPU")
@pytest.mark.parametrize("arch, d, grid, prefix, causal", ROPE_CASES)
def test_cuda_rope(ext, arch, d, grid, prefix, causal, monkeypatch) -> None:
    """Both CUDA forwards and backwards rotate q and k by the 2D RoPE tables inside the kernels
    and return dq, dk unrotated."""
    if arch == "sm90" and not _hopper_gpu():
        pytest.skip("the Hopper kernels need an sm_90 GPU")
    monkeypatch.setenv("FLASHDUO_CUDA_ARCH", arch)
    n, dtype = prefix + grid[0] * grid[1], torch.bfloat16
    g = torch.Generator(device="cuda").manual_seed(n + d)
    q, k, v, dout = (torch.randn(2, 3, n, d, generator=g, device="cuda").to(dtype)
                     for _ in range(4))
    table = reference.CosSinTable(100.0, grid[0], d, device="cuda", W_img=grid[1])
    scale, rope = d**-0.5, (table.COSP, table.SINP, prefix)
    out, lse = flash.fwd(q, k, v, causal, scale, rope=rope)
    grads = flash.bwd(dout, q, k, v, out, lse, causal, scale, rope=rope)

    def attend(upcast: bool):
        xs = [(t.double() if upcast else t).requires_grad_() for t in (q, k, v)]
        qr, kr = (reference.apply_rope(x, table, prefix) for x in xs[:2])
        o, lse_ref = reference.attention_ref(qr, kr, xs[2], causal, scale, upcast=upcast)
        return (o, lse_ref, *torch.autograd.grad(o, xs, dout.to(o.dtype)))

    truth, base = attend(True), attend(False)
    for name, kind, x, ref, bl in zip(("out", "lse", "dq", "dk", "dv"),
                                      ("out", "lse", "grad", "grad", "grad"),
                                      (out, lse, *grads), truth, base):
        assert_close(f"cuda {arch} rope {name}", x, ref, bl, kind, dtype)


@pytest.mark.skipif(not ON_GPU, reason="running the CUDA kernels needs a CUDA GPU")
def test_head_dim_96_without_hopper_is_refused(ext, monkeypatch) -> None:
    monkeypatch.setenv("FLASHDUO_CUDA_ARCH", "sm80")
    q = torch.randn(1, 2, 64, 96, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="head dim 96 needs the Hopper forward"):
        flash.fwd(q, q, q, False, 0.1)


def _backward_case(case, arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward and backward of case with FLASHDUO_CUDA_ARCH=arch; gradients by the pass rule."""
    if arch == "sm90" and not _hopper_gpu():
        pytest.skip("the Hopper kernels need an sm_90 GPU")
    monkeypatch.setenv("FLASHDUO_CUDA_ARCH", arch)
    b, hq, hkv, nq, nk, d, dtype, causal = case
    g = torch.Generator(device="cuda").manual_seed(nq * 5 + nk)
    q, k, v, dout = (
        torch.randn(b, h, n, d, generator=g, device="cuda").to(dtype)
        for h, n in ((hq, nq), (hkv, nk), (hkv, nk), (hq, nq))
    )
    scale = d**-0.5
    out, lse = flash.fwd(q, k, v, causal, scale)
    dq, dk, dv = flash.bwd(dout, q, k, v, out, lse, causal, scale)
    truth, baseline = run_reference(q, k, v, causal, dout)
    for name, x, ref, base in zip(("dq", "dk", "dv"), (dq, dk, dv), truth[2:], baseline[2:]):
        assert_close(f"cuda {arch} {name}", x, ref, base, "grad", dtype)


@pytest.mark.skipif(not ON_GPU, reason="running the CUDA kernels needs a CUDA GPU")
@pytest.mark.parametrize("arch", ["sm80", "sm90"])
@pytest.mark.parametrize("case", FWD_CASES, ids=_case_id)
def test_cuda_backward_matches_reference(ext, case, arch, monkeypatch) -> None:
    """Both CUDA backwards (mma.sync, forced by FLASHDUO_CUDA_ARCH=sm80; Hopper) on each case."""
    _backward_case(case, arch, monkeypatch)


@pytest.mark.skipif(not ON_GPU, reason="running the CUDA kernels needs a CUDA GPU")
@pytest.mark.parametrize("case", HOPPER_CASES, ids=_case_id)
def test_hopper_backward_head_dims(ext, case, monkeypatch) -> None:
    """D = 96 and 256 through the Hopper backward."""
    _backward_case(case, "sm90", monkeypatch)


@pytest.mark.skipif(not ON_GPU, reason="running the CUDA kernels needs a CUDA GPU")
def test_cuda_unaligned_views(ext) -> None:
    """Views whose rows miss 16-byte boundaries (odd storage offset, odd row stride) still work:
    fwd and bwd against the reference, dout included."""
    b, h, n, d, dtype = 2, 2, 197, 64, torch.bfloat16
    g = torch.Generator(device="cuda").manual_seed(11)

    def odd(rows_pad: int, offset: int) -> torch.Tensor:
        flat = torch.randn(b * h * n * (d + rows_pad) + offset, generator=g, device="cuda")
        return flat.to(dtype)[offset:].view(b, h, n, d + rows_pad)[..., :d]

    q, k, v, dout = odd(0, 3), odd(2, 0), odd(1, 5), odd(0, 1)
    assert q.data_ptr() % 16 and k.stride(2) % 8 and dout.data_ptr() % 16
    out, lse = flash.fwd(q, k, v, False, d**-0.5)
    dq, dk, dv = flash.bwd(dout, q, k, v, out, lse, False, d**-0.5)
    truth, baseline = run_reference(q, k, v, False, dout)
    for name, x, ref, base in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), truth[:1] + truth[2:],
                                  baseline[:1] + baseline[2:]):
        assert_close(f"cuda unaligned {name}", x, ref, base, "out" if name == "out" else "grad",
                     dtype)


@pytest.mark.skipif(not ON_GPU, reason="the argument checks run on CUDA tensors")
def test_cuda_extension_guards(ext) -> None:
    """Callers that skip the front door still get an error naming the argument, before any
    launch: the extension's own guards raise RuntimeError."""
    q = torch.randn(1, 2, 16, 48, device="cuda", dtype=torch.float16)
    with pytest.raises(RuntimeError, match="head dim must be 64, 96, 128 or 256, got 48"):
        flash.fwd(q, q, q, False, 0.1)
    q = torch.randn(1, 2, 16, 64, device="cuda", dtype=torch.float32)
    with pytest.raises(RuntimeError, match="float16 or bfloat16"):
        flash.fwd(q, q, q, False, 0.1)
    q = torch.randn(1, 2, 16, 64, device="cuda", dtype=torch.float16)
    with pytest.raises(RuntimeError, match="k must be a CUDA tensor"):
        flash.fwd(q, q.cpu(), q, False, 0.1)
    with pytest.raises(RuntimeError, match="v must have last-dim stride 1"):
        flash.fwd(q, q, q.transpose(-1, -2), False, 0.1)
    with pytest.raises(RuntimeError, match="multiple of k heads"):
        flash.fwd(q, q[:, :1].expand(1, 3, 16, 64)[:, :3], q[:, :1].expand(1, 3, 16, 64), False, 0.1)
    with pytest.raises(RuntimeError, match="scale must be positive and finite"):
        flash.fwd(q, q, q, False, -1.0)
    cos = torch.ones(15, 32, device="cuda")
    with pytest.raises(RuntimeError, match="rope covers 0 prefix \\+ 15 tokens, but Nq = 16"):
        flash.fwd(q, q, q, False, 0.1, rope=(cos, cos, 0))
    with pytest.raises(RuntimeError, match="rope tables must be contiguous float32"):
        flash.fwd(q, q, q, False, 0.1, rope=(cos.half(), cos.half(), 1))
    out, lse = flash.fwd(q, q, q, False, 0.1)
    with pytest.raises(RuntimeError, match="lse must be a contiguous float32"):
        flash.bwd(q, q, q, q, out, lse[:, :, :8], False, 0.1)


def test_wgmma_header_is_generated() -> None:
    """cuda/flash/sm90/wgmma.cuh is what gen_wgmma.py writes (edit the generator, not the header)."""
    import importlib.util

    from bindings import sources

    path = sources.ROOT / "cuda" / "flash" / "sm90" / "gen_wgmma.py"
    spec = importlib.util.spec_from_file_location("gen_wgmma", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.HEADER.read_text() == gen.render()


def test_arch_list_builds_hopper_as_90a(monkeypatch: pytest.MonkeyPatch) -> None:
    """9.0 becomes 9.0a (wgmma and setmaxnreg exist only there); other targets stay as given."""
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    assert loader.arch_list() == "8.0;9.0a"
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6 9.0a")
    assert loader.arch_list() == "8.6;9.0a"
