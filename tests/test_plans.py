"""Launch plans (``triton_impl._plans``): a call's direct launches recorded once and replayed on a
later call's tensors. On any machine with the compiled kernels faked: the replay's tensor swap,
the calls that must not be planned, and — through the real launchers' argument building — that
a call differing from a recorded one in anything its key must hold launches what the launchers
build for it. On a GPU against Triton's own launch path, bit for bit."""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.cases import ON_GPU, Case
from tests.helpers import case_inputs, skip_if_unrunnable

pytest.importorskip("triton")

# The launchers are imported here, before any test patches ``_config``: their autotune config
# lists are built at import, for the interpreter or the GPU as ``_config.interpreting()`` says.
from triton_impl import _config, _plans, bwd, fwd, gluon_fwd  # noqa: E402 (needs triton)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class _Desc:
    """A stand-in host tensor descriptor: a base tensor and a block shape."""

    base: torch.Tensor
    block_shape: list


class _Compiled:
    """A compiled kernel whose launcher notes what it was handed."""

    function = packed_metadata = None

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def run(self, x, y, z, stream, function, metadata, *rest) -> None:
        self.calls.append(((x, y, z), rest[3:]))


@pytest.fixture
def fake_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans and direct launches on, a current device and stream without a GPU driver."""
    monkeypatch.setattr(_plans, "ENABLED", True)
    monkeypatch.setattr(_config, "direct_launch", lambda: True)
    monkeypatch.setattr(_config, "driver", types.SimpleNamespace(active=types.SimpleNamespace(
        get_current_device=lambda: 0, get_current_stream=lambda device: 7)))


def _launcher(compiled: _Compiled, direct: bool = True):
    """A call that launches ``compiled`` on (a, 5, b, a descriptor of c, 0.5), as
    ``_config._launch_compiled`` notes it (or as a launch that did not go direct)."""

    def call(a, b, c) -> None:
        noted = _config.recorder()
        args = (a, 5, b, _Desc(c, [16, 64]), 0.5)
        if noted is not None:
            noted.append((compiled, (3, 1, 1), args, ("tail",)) if direct else None)
        compiled.run(3, 1, 1, 7, None, None, None, None, None, *args, "tail")

    return call


def test_replay_swaps_in_the_new_tensors(fake_device) -> None:
    compiled, plans = _Compiled(), _plans.Plans()
    call = _launcher(compiled)
    first = [torch.randn(4) for _ in range(3)]
    ran = []
    plans.launch(("key",), first, lambda: (ran.append(1), call(*first)))
    assert ran == [1] and len(plans) == 1
    second = [torch.randn(4) for _ in range(3)]
    plans.launch(("key",), second, lambda: ran.append(2))
    assert ran == [1], "a recorded key ran the launcher again instead of replaying"
    (grid, args), (grid2, replayed) = compiled.calls
    assert grid == grid2 == (3, 1, 1)
    assert replayed[0] is second[0] and replayed[1] == 5 and replayed[2] is second[1]
    assert replayed[3].base is second[2] and replayed[3].block_shape == [16, 64]
    assert args[3].base is first[2], "the recorded descriptor was changed by the replay"
    assert replayed[4:] == (0.5, "tail")


@pytest.mark.parametrize("why", ["no-key", "not-direct", "unknown-tensor", "tensor-twice"])
def test_calls_that_cannot_be_replayed_run_every_time(fake_device, why: str) -> None:
    compiled, plans = _Compiled(), _plans.Plans()
    call = _launcher(compiled, direct=why != "not-direct")
    a, b, c = (torch.randn(4) for _ in range(3))
    tensors = {"unknown-tensor": [a, b], "tensor-twice": [a, b, c, a]}.get(why, [a, b, c])
    key = None if why == "no-key" else ("key",)
    for _ in range(2):
        plans.launch(key, tensors, lambda: call(a, b, c))
    assert len(compiled.calls) == 2 and len(plans) == 0


def test_plans_are_off_by_default(fake_device, monkeypatch) -> None:
    """Off unless FLASHDUO_LAUNCH_PLANS=1 as triton_impl is imported; callers then build no key."""
    import subprocess
    import sys

    monkeypatch.delenv("FLASHDUO_LAUNCH_PLANS", raising=False)
    code = "from triton_impl import _plans; print(_plans.ENABLED)"
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()
    assert got == ["False"]
    monkeypatch.setattr(_plans, "ENABLED", False)
    assert not _plans.Plans.on()


def test_no_plans_inside_torch_compiles_recording(fake_device) -> None:
    """Launches recorded for torch.compile (``_traced.recording()``) build no key."""
    from triton_impl import _traced

    assert _plans.Plans.on()
    with _traced.recording():
        assert not _plans.Plans.on()


def test_a_launch_hook_takes_the_launchers_path(fake_device, monkeypatch) -> None:
    compiled, plans = _Compiled(), _plans.Plans()
    call = _launcher(compiled)
    t = [torch.randn(4) for _ in range(3)]
    ran = []
    for _ in range(2):
        plans.launch(("key",), t, lambda: (ran.append(1), call(*t)))
        monkeypatch.setattr(_config, "_hooked", lambda: True)
    assert ran == [1, 1]


CASES = [Case(2, 4, 2, 256, 256, 64, torch.bfloat16, True),
         Case(2, 4, 4, 203, 203, 128, torch.float16, False),
         Case(1, 4, 1, 384, 384, 64, torch.bfloat16, False)]


@pytest.mark.parametrize("packed", [False, True], ids=["qkv", "packed"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_replayed_calls_equal_the_launchers_path(case: Case, packed: bool, monkeypatch) -> None:
    """On a GPU: calls of one key after the first replay its plan (forward and backward), and
    give what Triton's own launch path gives for the same inputs, bit for bit."""
    skip_if_unrunnable("triton", case)
    if not ON_GPU:
        pytest.skip("plans replay direct launches, which are GPU-only")
    if packed and case.hq != case.hkv:
        pytest.skip("a packed qkv has one head count")
    monkeypatch.setattr(_plans, "ENABLED", True)
    import flashduo

    def run(q, k, v, dout):
        if packed:
            qkv = torch.stack((q, k, v), 2).transpose(1, 3).detach().requires_grad_()
            out = flashduo.attention_qkvpacked(qkv, case.causal, backend="triton")
            return (out, *torch.autograd.grad(out, qkv, dout.transpose(1, 2)))
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        out = flashduo.attention(q, k, v, case.causal, backend="triton")
        return (out, *torch.autograd.grad(out, (q, k, v), dout))

    for _ in range(2):  # tunes and compiles, then records
        run(*case_inputs(case))
    inputs = case_inputs(case, seed=1)
    with _counted_replays() as replays:
        replayed = run(*inputs)
    assert len(replays) == 2, "the forward and the backward were not both replayed"
    monkeypatch.setenv("FLASHDUO_DIRECT_LAUNCH", "0")
    through_triton = run(*inputs)
    for name, a, b in zip(("out", "dq", "dk", "dv"), replayed, through_triton):
        assert torch.equal(a, b), f"{name}: the replayed call differs from Triton's launch path"


class _Logged:
    """A compiled kernel for every signature: its launches are logged with that signature (the
    kernel, its arguments' dtypes, alignment and values, its constexprs), tensors by shape,
    strides, dtype and (for the call's inputs) identity."""

    function = packed_metadata = None

    def __init__(self, log: list, sig: tuple) -> None:
        self.log, self.sig = log, sig

    def run(self, x, y, z, stream, function, metadata, *rest) -> None:
        self.log.append((self.sig, (x, y, z), tuple(_logged(a) for a in rest[3:])))


def _logged(a: object) -> object:
    """A launch argument as the log compares it: a tensor by shape, strides, dtype and (for a
    call's input) identity; a host descriptor by its base and its other fields."""
    if isinstance(a, torch.Tensor):
        return a.shape, a.stride(), a.dtype, id(a) if getattr(a, "_input", False) else None
    if hasattr(a, "block_shape"):
        return (type(a), _logged(a.base), tuple(a.shape), tuple(a.strides),
                tuple(a.block_shape), a.layout, a.padding)
    return a


@pytest.fixture
def logged_launches(fake_device, monkeypatch) -> list:
    """The real launchers (argument building, configs, plans) over kernels that only log:
    every shape class has a config and every signature a compiled kernel."""
    import triton

    log: list = []

    class Compiled(dict):
        def get(self, sig, default=None):
            kernel, *_ = sig[0]  # the kernel, then its argument signature and constexprs
            return _Logged(log, (id(kernel), *sig[2:])), (), ()

    class Chosen(dict):
        def get(self, key, default=None):
            return triton.Config({"BLOCK_M": 32, "BLOCK_N": 64}, num_warps=4, num_stages=2)

    monkeypatch.setattr(_config, "_COMPILED", Compiled())
    monkeypatch.setattr(_config, "_CHOSEN", Chosen())
    monkeypatch.setattr(_config, "interpreting", lambda: False)
    return log


def _tensors(shape: tuple, layout: str = "bhnd", offset: int = 0) -> list[torch.Tensor]:
    """q, k, v, dout, out as inputs (B, H, N, D) in ``layout`` memory, ``offset`` elements into
    their storage (1: not 16-byte aligned); lse float32; RoPE cos and sin tables (N, D / 2)."""
    b, h, n, d = shape

    def make() -> torch.Tensor:
        dims = (b, h, n, d) if layout == "bhnd" else (b, n, h, d)
        t = torch.randn(offset + math.prod(dims), dtype=torch.float16)[offset:].view(dims)
        t = t if layout == "bhnd" else t.transpose(1, 2)
        t._input = True
        return t

    lse, cos, sin = torch.randn(b, h, n), torch.randn(n, d // 2), torch.randn(n, d // 2)
    lse._input = cos._input = sin._input = True
    return [make() for _ in range(5)] + [lse, cos, sin]


@contextlib.contextmanager
def _counted_replays() -> Iterator[list]:
    """A list that gets one entry per plan replay inside the block."""
    replays: list = []
    with pytest.MonkeyPatch.context() as spy:
        spy.setattr(_plans._Plan, "replay", lambda plan, *a, f=_plans._Plan.replay: (
            replays.append(1), f(plan, *a))[1])
        yield replays


def _plans_on_and_off(log: list, call) -> tuple[list, list, int]:
    """``call()`` with plans on, then with plans off: the launches each logged, and the number
    of replays the first made."""
    log.clear()
    with _counted_replays() as replays:
        call()
    replayed = list(log)
    log.clear()
    with pytest.MonkeyPatch.context() as off:
        off.setattr(_plans, "ENABLED", False)
        call()
    return replayed, list(log), len(replays)


def _assert_same_launches(name: str, replayed: list, plain: list) -> None:
    """The replay launched the kernels, grids and arguments the launchers built with plans off."""
    assert replayed, f"{name}: nothing launched"
    assert [g[0] for g in replayed] == [w[0] for w in plain], f"{name}: other kernels"
    for got, want in zip(replayed, plain, strict=True):
        for i, (a, b) in enumerate(zip(got[2], want[2], strict=True)):
            assert a == b, f"{name}: argument {i} of the replay is {a}, the launchers' {b}"
        assert got == want, f"{name}: the replay's signature or grid differs"


# (name, keywords of a call that differs from the base call in one thing the key must hold)
_VARIANTS = [
    ("same", {}),
    ("scale", {"scale": 0.3}),
    ("causal", {"causal": False}),
    ("layout", {"layout": "bnhd"}),
    ("unaligned", {"offset": 1}),
    ("window", {"window": (7, 0)}),
    ("softcap", {"softcap": 2.0}),
    ("rope", {"rope": True}),
    ("shape", {"shape": (2, 4, 96, 32)}),
    ("packed", {"packed": True}),
    ("gqa", {"hkv": 2}),
]


@pytest.mark.parametrize("name,change", _VARIANTS, ids=[v[0] for v in _VARIANTS])
def test_a_replay_launches_what_the_launchers_would(logged_launches: list, name: str,
                                                    change: dict) -> None:
    """After a base call is recorded, a call with new tensors that differs from it in ``name``
    launches exactly what the launchers build for it with plans off: the same kernels, grids,
    scalars, and its own tensors in their places (a key that left ``name`` out would replay the
    base call's arguments)."""

    def call(shape=(2, 4, 64, 32), layout="bhnd", offset=0, scale=0.125, causal=True,
             window=None, softcap=None, rope=False, packed=False, hkv=None, tensors=None):
        q, k, v, dout, out, lse, cos, sin = tensors or _tensors(shape, layout, offset)
        if hkv is not None:  # GQA: the first hkv heads of k and v
            k, v = k[:, :hkv], v[:, :hkv]
        tables = (cos, sin, 1) if rope else None
        masks = {"window": window, "softcap": softcap}
        if not rope:
            fwd.attention_fwd(q, k, v, causal, scale, **masks)
        grads = torch.empty(shape[0], shape[2], 3, *shape[1:2], shape[3],
                            dtype=q.dtype) if packed else None
        bwd.attention_bwd(dout, q, k, v, out, lse, causal, scale, rope=tables, packed=grads,
                          **masks)
        return (q, k, v, dout, out, lse)

    call()
    call()  # recorded
    args = {"shape": (2, 4, 64, 32), "layout": "bhnd", "offset": 0, **change}
    tensors = _tensors(args["shape"], args["layout"], args["offset"])
    replayed, plain, replays = _plans_on_and_off(logged_launches,
                                                 lambda: call(**args, tensors=tensors))
    assert name != "same" or replays == 2, "the forward and backward were not replayed"
    _assert_same_launches(name, replayed, plain)


_GLUON_VARIANTS = [("same", {}), ("scale", {"scale": 0.3}), ("causal", {"causal": False}),
                   ("layout", {"layout": "bnhd"}), ("one-program-a-tile", {"persistent": False}),
                   ("programs", {"persistent": 7}), ("shape", {"shape": (1, 4, 256, 64)})]


@pytest.mark.parametrize("name,change", _GLUON_VARIANTS, ids=[v[0] for v in _GLUON_VARIANTS])
def test_a_gluon_replay_launches_what_its_launcher_would(logged_launches: list, name: str,
                                                         change: dict, monkeypatch) -> None:
    """The Gluon forward's plans, as ``test_a_replay_launches_what_the_launchers_would``: its
    host descriptors are made again on the new call's tensors."""

    monkeypatch.setattr(gluon_fwd, "_sm_count", lambda index: 132)

    def call(shape=(2, 4, 128, 64), layout="bhnd", scale=0.125, causal=True, persistent=True,
             tensors=None):
        q, k, v = (tensors or _tensors(shape, layout))[:3]
        gluon_fwd.attention_fwd(q, k, v, causal, scale, persistent)

    call()
    call()  # recorded
    args = {"shape": (2, 4, 128, 64), "layout": "bhnd", **change}
    tensors = _tensors(args["shape"], args["layout"])
    replayed, plain, replays = _plans_on_and_off(logged_launches,
                                                 lambda: call(**args, tensors=tensors))
    assert name != "same" or replays == 1, "the Gluon forward was not replayed"
    _assert_same_launches(name, replayed, plain)


_VARLEN_VARIANTS = [("same", {}), ("scale", {"scale": 0.3}), ("causal", {"causal": False}),
                    ("sequences", {"batch": 4}), ("longest", {"longest": 50}),
                    ("window", {"window": (5, 0)}), ("softcap", {"softcap": 2.0}),
                    ("rope", {"rope": True}), ("gqa", {"hkv": 2})]


@pytest.mark.parametrize("name,change", _VARLEN_VARIANTS, ids=[v[0] for v in _VARLEN_VARIANTS])
def test_a_varlen_replay_launches_what_the_launchers_would(logged_launches: list, name: str,
                                                           change: dict) -> None:
    """The packed-sequence launchers' plans, as ``test_a_replay_launches_what_the_launchers_would``
    (the RoPE tables go to the backward only, as the op layer hands them)."""

    def tensors(batch: int, hkv: int) -> list[torch.Tensor]:
        total, h, d = 96, 4, 32
        made = [torch.randn(total, h if i in (0, 3, 4) else hkv, d, dtype=torch.float16)
                for i in range(5)]  # q, k, v, dout, out
        made += [torch.randn(h, total), torch.randn(total, d // 2), torch.randn(total, d // 2)]
        made += [torch.arange(0, total + 1, total // batch, dtype=torch.int32)] * 2
        made[-1] = made[-2].clone()
        for t in made:
            t._input = True
        return made

    def call(scale=0.125, causal=True, batch=3, longest=32, window=None, softcap=None,
             rope=False, hkv=4, made=None):
        q, k, v, dout, out, lse, cos, sin, cu_q, cu_k = made or tensors(batch, hkv)
        masks = {"window": window, "softcap": softcap}
        fwd.attention_fwd_varlen(q, k, v, cu_q, cu_k, longest, longest, causal, scale, **masks)
        bwd.attention_bwd_varlen(dout, q, k, v, out, lse, cu_q, cu_k, longest, longest, causal,
                                 scale, rope=(cos, sin) if rope else None, **masks)

    call()
    call()  # recorded
    args = {"batch": 3, "hkv": 4, **change}
    made = tensors(args["batch"], args["hkv"])
    replayed, plain, replays = _plans_on_and_off(logged_launches,
                                                 lambda: call(**args, made=made))
    assert name != "same" or replays == 2, "the forward and backward were not replayed"
    _assert_same_launches(name, replayed, plain)


def test_replayed_packed_sequences_equal_the_launchers_path(monkeypatch) -> None:
    """On a GPU: packed-sequence calls of one key after the first replay their plans and give
    what Triton's own launch path gives, bit for bit."""
    skip_if_unrunnable("triton", Case(1, 4, 2, 300, 300, 64, torch.bfloat16, True))
    if not ON_GPU:
        pytest.skip("plans replay direct launches, which are GPU-only")
    import flashduo

    monkeypatch.setattr(_plans, "ENABLED", True)
    lens = [37, 300, 129]
    cu = torch.tensor([0, 37, 337, 466], dtype=torch.int32, device="cuda")

    def run(seed: int):
        gen = torch.Generator(device="cuda").manual_seed(seed)
        q, k, v, dout = (torch.randn(466, h, 64, generator=gen, device="cuda",
                                     dtype=torch.bfloat16) for h in (4, 2, 2, 4))
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        out = flashduo.attention_varlen(q, k, v, cu, cu, max(lens), max(lens), True,
                                        backend="triton", window=(64, 0))
        return (out, *torch.autograd.grad(out, (q, k, v), dout))

    for seed in range(2):  # tunes and compiles, then records
        run(seed)
    with _counted_replays() as replays:
        replayed = run(2)
    assert len(replays) == 2, "the forward and the backward were not both replayed"
    monkeypatch.setenv("FLASHDUO_DIRECT_LAUNCH", "0")
    for name, a, b in zip(("out", "dq", "dk", "dv"), replayed, run(2), strict=True):
        assert torch.equal(a, b), f"{name}: the replayed call differs from Triton's launch path"
