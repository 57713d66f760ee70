"""The front door: backend selection, torch.library registration, torch.compile, seed names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flashduo
from flashduo import registry
from tests.cases import DEVICE, ON_GPU
from tests.helpers import assert_compiled_matches_eager

ROOT = Path(__file__).resolve().parents[1]


def qkv(dtype=torch.float16, n=64, d=64, grad=False):
    t = [torch.randn(2, 4, n, d, device=DEVICE).to(dtype) for _ in range(3)]
    return [x.requires_grad_(grad) for x in t]


def test_selection_priority(monkeypatch) -> None:
    monkeypatch.delenv("FLASHDUO_BACKEND", raising=False)
    assert registry.resolve_backend(None) == registry.default_backend()
    monkeypatch.setenv("FLASHDUO_BACKEND", "reference")
    assert registry.resolve_backend(None) == "reference"
    with flashduo.use_backend("torch"):
        assert registry.resolve_backend(None) == "torch"
        assert registry.resolve_backend("triton") == "triton"
        with flashduo.use_backend("reference"):
            assert registry.resolve_backend(None) == "reference"
        assert registry.resolve_backend(None) == "torch"
    assert registry.resolve_backend(None) == "reference"


def test_env_backend_is_used(monkeypatch) -> None:
    calls = []
    ref = flashduo.get_backend("reference")
    spy = registry.Backend(
        name="spy", fwd=lambda *a: (calls.append("fwd"), ref.fwd(*a))[1], bwd=ref.bwd,
        description="test double", dtypes=ref.dtypes, devices=ref.devices,
    )
    flashduo.register_backend(spy)
    try:
        monkeypatch.setenv("FLASHDUO_BACKEND", "spy")
        flashduo.attention(*qkv())
        assert calls == ["fwd"]
    finally:
        registry._REGISTRY.pop("spy")


def test_deterministic_resolution(monkeypatch) -> None:
    """The argument wins, then FLASHDUO_DETERMINISTIC (any case, spaces ignored), then True."""
    monkeypatch.delenv("FLASHDUO_DETERMINISTIC", raising=False)
    assert registry.resolve_deterministic(None) is True
    for env, want in (("0", False), (" Off ", False), ("false", False), ("1", True), ("YES", True)):
        monkeypatch.setenv("FLASHDUO_DETERMINISTIC", env)
        assert registry.resolve_deterministic(None) is want, env
        assert registry.resolve_deterministic(not want) is (not want), env


def _mode_spy(seen: list) -> registry.Backend:
    """The reference backend with two backward modes, recording the mode each backward gets."""
    ref = flashduo.get_backend("reference")

    def bwd(*args, deterministic):
        seen.append(deterministic)
        return ref.bwd(*args)

    return registry.Backend(name="mode-spy", fwd=ref.fwd, bwd=bwd, description="test double",
                            dtypes=ref.dtypes, devices=ref.devices, deterministic_modes=True)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_deterministic_reaches_the_backward(compiled: bool, monkeypatch) -> None:
    """A backend with deterministic_modes gets the resolved mode in its backward, eager and under
    torch.compile(fullgraph=True); the default comes from FLASHDUO_DETERMINISTIC."""
    seen: list = []
    flashduo.register_backend(_mode_spy(seen))
    monkeypatch.delenv("FLASHDUO_DETERMINISTIC", raising=False)

    def loss(q, k, v, mode):
        return flashduo.attention(q, k, v, causal=True, backend="mode-spy",
                                  deterministic=mode).float().sum()

    run = torch.compile(loss, fullgraph=True, backend="aot_eager") if compiled else loss
    try:
        torch._dynamo.reset()
        for mode in (True, False):
            q, k, v = qkv(torch.float32, n=24, d=16, grad=True)
            run(q, k, v, mode).backward()
        monkeypatch.setenv("FLASHDUO_DETERMINISTIC", "0")
        torch._dynamo.reset()
        q, k, v = qkv(torch.float32, n=24, d=16, grad=True)
        run(q, k, v, None).backward()
        assert seen == [True, False, False]
    finally:
        registry._REGISTRY.pop("mode-spy")
        torch._dynamo.reset()


def test_default_backend() -> None:
    expected = "triton" if ON_GPU or registry.triton_interpreting() else "reference"
    assert registry.default_backend() == expected


def test_available_backends_reports_reasons() -> None:
    avail = flashduo.available_backends()
    assert set(avail) == set(flashduo.registered_backends())
    assert avail["reference"] is None and avail["torch"] is None
    if ON_GPU:
        assert avail["triton"] is None and avail["cuda"] is None


def test_seed_compatible_names() -> None:
    if flashduo.get_backend("triton").unavailable():
        pytest.skip(flashduo.get_backend("triton").unavailable())
    q, k, v = qkv(torch.float32 if not ON_GPU else torch.float16, n=40, d=32)
    want = flashduo.attention(q, k, v, causal=True, scale=0.3, backend="reference")
    got1 = flashduo.sdpa_triton_fa(q, k, v, causal=True, sm_scale=0.3)
    got2 = flashduo.flash_attention(q, k, v, 0.3, True)
    torch.testing.assert_close(got1, want, atol=2e-3, rtol=0)
    torch.testing.assert_close(got2, want, atol=2e-3, rtol=0)


def test_triton_impl_does_not_import_the_front_door() -> None:
    """The kernels never import flashduo: a fresh interpreter imports triton_impl alone."""
    code = "import sys, triton_impl; assert 'flashduo' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def _opcheck_backends() -> list[str]:
    names = ["reference"]
    if ON_GPU:
        names += ["triton", "cuda"]
    return names


@pytest.mark.parametrize("backend", _opcheck_backends())
def test_opcheck(backend: str) -> None:
    dtype = torch.float16 if ON_GPU else torch.float32
    q, k, v = qkv(dtype, n=48, d=64, grad=True)
    out, lse, *_ = torch.ops.flashduo.fwd(q, k, v, True, 0.2, backend)
    dout = torch.randn_like(out)
    saved = [t.detach() for t in (q, k, v, out, lse)]
    for deterministic in (True, False):
        kwargs = {"deterministic": deterministic}
        torch.library.opcheck(torch.ops.flashduo.fwd.default, (q, k, v, True, 0.2, backend),
                              kwargs)
        torch.library.opcheck(torch.ops.flashduo.bwd.default, (dout, *saved, True, 0.2, backend),
                              kwargs)


def _compile_params():
    if ON_GPU:
        return [("triton", "inductor"), ("cuda", "inductor"), ("torch", "inductor")]
    return [("reference", "aot_eager")]


@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("backend, compiler", _compile_params())
def test_torch_compile_fullgraph(backend: str, compiler: str, deterministic: bool) -> None:
    """fullgraph=True fails on any graph break; compiled forward and grads equal eager, in both
    backward modes."""

    def block(q, k, v):
        out = flashduo.attention(q * 1.5, k, v, causal=True, backend=backend,
                                 deterministic=deterministic)
        return out.float().square().sum()

    dtype = torch.bfloat16 if ON_GPU else torch.float32
    assert_compiled_matches_eager(block, tuple(qkv(dtype, n=80, d=64, grad=True)), compiler)


def test_autocast_runs_float32_in_the_autocast_dtype() -> None:
    """float32 inputs under autocast run in bf16 like SDPA: bf16 out, float32 gradients."""
    device = "cuda" if ON_GPU else "cpu"
    backend = "triton" if ON_GPU else "reference"
    q, k, v = qkv(torch.float32, n=40, d=64, grad=True)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = flashduo.attention(q, k, v, causal=True, backend=backend)
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert out.dtype == want.dtype == torch.bfloat16
    out.float().sum().backward()
    assert q.grad.dtype == k.grad.dtype == v.grad.dtype == torch.float32
    exact = flashduo.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True, backend=backend)
    torch.testing.assert_close(out, exact)


def test_one_tensor_as_q_k_and_v_compiles_fullgraph() -> None:
    """``attention(x, x, x)`` (one tensor passed three times, which Dynamo cannot trace into an
    autograd.Function as is) compiles with fullgraph=True and gives eager's gradient."""
    x = torch.randn(1, 2, 8, 16, requires_grad=True)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return flashduo.attention(x, x, x, causal=True, backend="reference").square().sum()

    assert_compiled_matches_eager(loss, (x,), "aot_eager")


@pytest.mark.parametrize("packed", [False, True], ids=["qkv", "packed"])
def test_untracked_calls_skip_the_autograd_node(packed: bool, monkeypatch) -> None:
    """A call that records no graph (no_grad, or no input that requires grad) runs the forward
    without the autograd.Function and gives the tracked call's out and lse bit for bit; a
    tracked call still goes through it, and both are validated by the backend."""
    from flashduo import ops

    backend = "triton" if ON_GPU else "reference"
    q, k, v = qkv(torch.bfloat16 if ON_GPU else torch.float32, n=48, d=64, grad=True)
    applied = []
    for cls in (ops._Attention, ops._PackedAttention):
        monkeypatch.setattr(cls, "apply", lambda *a, f=cls.apply: applied.append(1) or f(*a))

    def call(*t: torch.Tensor) -> torch.Tensor:
        if packed:
            return flashduo.attention_qkvpacked(torch.stack(t, 2).transpose(1, 3), True,
                                                backend=backend)
        return flashduo.attention(*t, causal=True, backend=backend)

    tracked = call(q, k, v)
    assert applied == [1] and tracked.grad_fn is not None
    with torch.no_grad():
        untracked = call(q, k, v)
    detached = call(q.detach(), k.detach(), v.detach())
    assert applied == [1], "an untracked call built an autograd node"
    for out in (untracked, detached):
        assert out.grad_fn is None and not out.requires_grad
        assert torch.equal(out, tracked.detach())
    with torch.no_grad(), pytest.raises(ValueError, match="cannot run these inputs"):
        flashduo.attention(q.double(), k.double(), v.double(), backend="triton")


def test_forward_mode_ad_is_refused_not_dropped() -> None:
    """Dual tensors (forward-mode AD) and functorch transforms take the autograd.Function, which
    refuses them, instead of the untracked path, which would drop their tangents."""
    import torch.autograd.forward_ad as fwd_ad

    q, k, v = qkv(torch.float32, n=16, d=16)
    with fwd_ad.dual_level(), pytest.raises(NotImplementedError, match="jvp"):
        flashduo.attention(fwd_ad.make_dual(q, torch.randn_like(q)), k, v, backend="reference")
    with pytest.raises(RuntimeError, match="functorch transforms"):
        torch.func.jvp(lambda x: flashduo.attention(x, k, v, backend="reference"), (q,),
                       (torch.randn_like(q),))


@pytest.mark.parametrize("packed", [False, True], ids=["qkv", "packed"])
def test_an_output_without_a_gradient_gives_zero_gradients(packed: bool) -> None:
    """The eager node asks autograd for None instead of zero-filled gradients of outputs that get
    none (lse always): its backward called with None for out too returns zeros, and an ordinary
    backward still gives the gradients of a fresh call."""
    backend = "triton" if ON_GPU else "reference"
    q, k, v = qkv(torch.bfloat16 if ON_GPU else torch.float32, n=48, d=64, grad=True)

    def call() -> torch.Tensor:
        if packed:
            qkv_ = torch.stack((q, k, v), 2).transpose(1, 3)
            return flashduo.attention_qkvpacked(qkv_, True, backend=backend)
        return flashduo.attention(q, k, v, causal=True, backend=backend)

    out = call()
    node = out.grad_fn
    while type(node).__name__ not in ("_AttentionBackward", "_PackedAttentionBackward"):
        node = node.next_functions[0][0]
    with torch.no_grad():  # as the engine runs a backward
        grads = [g for g in node.apply(None, None) if g is not None]
    assert grads and all(torch.count_nonzero(g) == 0 for g in grads)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    want = torch.autograd.grad(call(), (q, k, v), dout)
    assert all(torch.equal(a, b) and torch.count_nonzero(a) > 0 for a, b in zip(got, want))


def test_info_lists_the_switches_that_are_set() -> None:
    """``python -m flashduo info`` names the backends and every FLASHDUO_ switch set."""
    env = {**os.environ, "FLASHDUO_LAUNCH_PLANS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "flashduo", "info"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "FLASHDUO_LAUNCH_PLANS=1" in run.stdout and "backends:" in run.stdout, run.stdout
