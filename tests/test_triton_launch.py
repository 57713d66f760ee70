"""The Triton backend's direct launches (``triton_impl._config._launch_compiled``): after the first
launch of an argument signature, kernels are launched through their compiled launcher. Results must
equal Triton's own launch path bit for bit, and a new signature (here: inputs that are not 16-byte
aligned) must get its own compiled kernel."""

from __future__ import annotations

import pytest
import torch

import flashduo
from tests.cases import ON_GPU, Case, assert_close
from tests.helpers import case_inputs, run_backend, run_reference, skip_if_unrunnable

CASE = Case(2, 4, 2, 203, 203, 64, torch.bfloat16, True)


def _needs_gpu() -> None:
    skip_if_unrunnable("triton", CASE)
    if not ON_GPU:
        pytest.skip("direct launches are GPU-only: the interpreter takes Triton's own path")


def _fwd_bwd(q, k, v, dout) -> tuple[torch.Tensor, ...]:
    out, lse = flashduo.attention_with_lse(q, k, v, causal=CASE.causal, backend="triton")
    return (out, lse, *torch.autograd.grad(out, (q, k, v), dout))


def test_direct_launch_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Direct launches only on the Triton releases the GPU tests ran them on, and not with
    FLASHDUO_DIRECT_LAUNCH=0."""
    pytest.importorskip("triton")
    from triton_impl import _config

    lo, hi = _config.DIRECT_LAUNCH_TRITON
    monkeypatch.delenv("FLASHDUO_DIRECT_LAUNCH", raising=False)
    for release, allowed in ((lo, True), (hi, True), ((lo[0], lo[1] - 1), False),
                             ((hi[0], hi[1] + 1), False), ((hi[0] + 1, 0), False)):
        monkeypatch.setattr(_config, "TRITON_RELEASE", release)
        assert _config.direct_launch() is (allowed and _config.knobs is not None), release
    monkeypatch.setattr(_config, "TRITON_RELEASE", lo)
    monkeypatch.setenv("FLASHDUO_DIRECT_LAUNCH", "0")
    assert not _config.direct_launch()


def test_direct_launch_equals_triton_path(monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_gpu()
    from triton_impl import _config, bwd, fwd

    if not _config.direct_launch():
        pytest.skip(f"direct launches are off for triton {'.'.join(map(str, _config.TRITON_RELEASE))}")
    q, k, v, dout = case_inputs(CASE)
    for _ in range(2):  # a new shape class tunes first, then its compiled kernels are remembered
        _fwd_bwd(q, k, v, dout)
    kernels = {sig[0][0] for sig in _config._COMPILED}
    passes = ((bwd._bwd_kernel, bwd._preprocess_kernel) if bwd.one_launch_bwd(CASE.d, CASE.causal)
              else (bwd._dkdv_kernel, bwd._dq_kernel))
    for kernel in (fwd._fwd_kernel, *passes):
        assert kernel in kernels, f"{kernel} was not remembered for direct launches"
    direct = _fwd_bwd(q, k, v, dout)
    monkeypatch.setenv("FLASHDUO_DIRECT_LAUNCH", "0")  # every launch through Triton's path
    _config._COMPILED.clear()
    through_triton = _fwd_bwd(q, k, v, dout)
    assert not _config._COMPILED, "FLASHDUO_DIRECT_LAUNCH=0 still remembered kernels"
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), direct, through_triton):
        assert torch.equal(a, b), f"{name}: direct launch differs from Triton's launch path"


def test_unaligned_inputs_get_their_own_kernel() -> None:
    """Inputs offset by one element from an aligned allocation are not 16-byte aligned: Triton
    compiles them without the alignment assumption, and the direct launch must not reuse the
    aligned inputs' kernel."""
    _needs_gpu()
    q, k, v, dout = case_inputs(CASE)
    run_backend("triton", q, k, v, CASE.causal, dout)

    def shifted(t: torch.Tensor) -> torch.Tensor:
        buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
        view = buf[1:].view(t.shape)
        view.copy_(t)
        return view.detach().requires_grad_()

    qs, ks, vs = shifted(q), shifted(k), shifted(v)
    assert qs.data_ptr() % 16 != 0
    truth, baseline = run_reference(qs, ks, vs, CASE.causal, dout)
    for _ in range(2):  # the second call launches directly
        got = run_backend("triton", qs, ks, vs, CASE.causal, dout)
        for name, kind, g, t, b in zip(("out", "lse", "dq", "dk", "dv"),
                                       ("out", "lse", "grad", "grad", "grad"), got, truth, baseline):
            assert_close(f"unaligned {name}", g, t, b, kind, CASE.dtype)


def test_launched_configs_name_the_tiles_each_kernel_ran() -> None:
    """``triton_impl.launched_configs`` names the config of every autotuned kernel a forward and
    backward launched (the interpreter's single config included), and ``reset`` forgets them."""
    case = Case(2, 4, 2, 203, 203, 64, torch.float16, True)  # float16 runs in the interpreter too
    skip_if_unrunnable("triton", case)
    import triton_impl
    from triton_impl import bwd

    q, k, v, dout = case_inputs(case)
    triton_impl.launched_configs(reset=True)
    out = flashduo.attention(q, k, v, causal=case.causal, backend="triton")
    torch.autograd.grad(out, (q, k, v), dout)
    seen = triton_impl.launched_configs(reset=True)
    passes = {"bwd"} if bwd.one_launch_bwd(case.d, case.causal) else {"dkdv", "dq"}
    assert set(seen) == {"fwd"} | passes, seen
    for text in seen.values():
        tiles, warps, stages = text.split()[:3]
        assert "x" in tiles and warps.startswith("w") and stages.startswith("s"), text
    assert triton_impl.launched_configs() == {}
