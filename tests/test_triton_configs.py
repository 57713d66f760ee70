"""The Triton forward launched with a forced tile config (``attention_fwd(..., config=...)``, what
the benchmark's tile sweep uses): every config gives the reference's out and lse, including ragged
tails and the causal diagonal, and leaves the tuned choice alone."""

from __future__ import annotations

import pytest
import torch

from tests.cases import ON_GPU, Case, assert_close, poison_allocator
from tests.helpers import case_inputs, run_reference, skip_if_unrunnable

# (BLOCK_M, BLOCK_N, num_warps, num_stages[, TMA[, maxnreg]]): small tiles in the interpreter, the
# heatmap's on a GPU, TMA descriptor loads there (on Hopper; the pointer path on older GPUs) and
# register caps
CONFIGS = ([(32, 16, 4, 3), (64, 32, 4, 3), (128, 64, 8, 3), (64, 128, 4, 3), (128, 128, 8, 2),
            (128, 64, 8, 3, True), (64, 128, 4, 3, True), (128, 64, 8, 2, False, 128),
            (128, 64, 8, 2, True, 128)]
           if ON_GPU else [(16, 16, 4, 1), (32, 16, 4, 1), (16, 32, 4, 1)])
CASES = ([Case(2, 4, 2, 203, 203, d, torch.float16, c) for d in (64, 128) for c in (False, True)]
         + [Case(1, 2, 2, 113, 300, 64, torch.bfloat16, True)]
         if ON_GPU else
         [Case(1, 2, 1, 37, 37, 32, torch.float32, c) for c in (False, True)]
         + [Case(1, 2, 2, 21, 50, 16, torch.float16, True)])


def _extras(cfg: tuple) -> tuple[bool, int | None]:
    """(TMA, maxnreg) of a CONFIGS row: False and None where the row leaves them out."""
    return (cfg[4] if len(cfg) > 4 else False), (cfg[5] if len(cfg) > 5 else None)


def _config_id(cfg: tuple) -> str:
    tma, cap = _extras(cfg)
    return "bm{}-bn{}-w{}-s{}".format(*cfg) + ("-tma" if tma else "") + (f"-r{cap}" if cap else "")


@pytest.mark.parametrize("cfg", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forced_config_matches_reference(case: Case, cfg: tuple) -> None:
    skip_if_unrunnable("triton", case)
    from triton_impl import _config, _tma
    from triton_impl.fwd import attention_fwd

    q, k, v, dout = case_inputs(case)
    q, k, v = (t.detach() for t in (q, k, v))
    bm, bn, warps, stages = cfg[:4]
    tma, cap = _extras(cfg)
    if tma and not _tma.tma_usable(q, k, v):
        tma = False  # a GPU before Hopper: the same tiles through pointer loads
    config = _config._cfg(bm, bn, warps, stages, tma, cap)
    chosen = dict(_config._CHOSEN)
    poison_allocator((q.shape, q.dtype), (q.shape[:3], torch.float32))
    out, lse = attention_fwd(q, k, v, case.causal, case.d ** -0.5, config=config)
    assert _config._CHOSEN == chosen, "a forced config must not replace the tuned choice"
    truth, baseline = run_reference(q, k, v, case.causal, dout)
    assert_close(f"bm={bm} bn={bn} out", out, truth[0], baseline[0], "out", case.dtype)
    assert_close(f"bm={bm} bn={bn} lse", lse, truth[1], baseline[1], "lse", case.dtype)


def test_descriptor_and_register_cap_configs_only_where_tma_ok(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward's tuning space holds descriptor and register-cap configs only for launches that
    can pass them (``TMA_OK``: eager, on Hopper, tensors a descriptor can describe); the others
    tune over the rest."""
    pytest.importorskip("triton")
    from triton_impl import _config

    monkeypatch.setattr(_config, "autotuning", lambda: True)
    table = [_config._cfg(*row) for row in _config.FWD]
    special = [c for c in table if c.kwargs.get("TMA") or c.maxnreg]
    assert any(c.maxnreg for c in special) and any(c.kwargs.get("TMA") for c in special)
    prune = _config.make_prune("m")
    q = torch.empty(1, 1, 64, 64, dtype=torch.float16)
    for tma_ok in (False, True):
        kept = prune(table, {"Q": q, "BLOCK_D": 64, "TMA_OK": tma_ok})
        assert kept and all(c in table for c in kept)
        assert any(c in special for c in kept) is tma_ok, [_config.describe(c) for c in kept]


def test_forced_config_is_the_one_launched() -> None:
    """A config the kernel cannot compile (BLOCK_M = 24 is not a power of two) fails: the forced
    config, not a tuned one, is what runs."""
    case = CASES[0]
    skip_if_unrunnable("triton", case)
    import triton

    from triton_impl.fwd import attention_fwd

    q, k, v, _ = case_inputs(case)
    bad = triton.Config({"BLOCK_M": 24, "BLOCK_N": 16}, num_warps=4, num_stages=1)
    with pytest.raises(Exception, match="power of 2"):
        attention_fwd(q.detach(), k.detach(), v.detach(), case.causal, 0.125, config=bad)


def test_tuning_compiles_and_times_every_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    """With autotuning on (as in the benchmark), a new shape class compiles its candidates together,
    times each of them, launches the fastest, and the result is right."""
    case = CASES[0]
    skip_if_unrunnable("triton", case)
    if not ON_GPU:
        pytest.skip("autotuning needs a GPU: the interpreter runs a single config")
    import math

    from triton_impl import _config, fwd

    monkeypatch.setenv("FLASHDUO_AUTOTUNE", "1")
    monkeypatch.setattr(_config, "_CHOSEN", {})
    monkeypatch.setattr(fwd._fwd_kernel, "cache", {})
    q, k, v, dout = case_inputs(case)
    q, k, v = (t.detach() for t in (q, k, v))
    poison_allocator((q.shape, q.dtype), (q.shape[:3], torch.float32))
    out, lse = fwd.attention_fwd(q, k, v, case.causal, case.d ** -0.5)
    timings = {cfg: t[0] for cfg, t in fwd._fwd_kernel.configs_timings.items()}
    assert len(timings) > 1, "autotuning should have timed several candidates"
    assert all(math.isfinite(t) and t > 0 for t in timings.values()), timings
    assert fwd._fwd_kernel.best_config == min(timings, key=timings.get)
    truth, baseline = run_reference(q, k, v, case.causal, dout)
    assert_close("tuned out", out, truth[0], baseline[0], "out", case.dtype)
    assert_close("tuned lse", lse, truth[1], baseline[1], "lse", case.dtype)


@pytest.mark.parametrize("one_launch", [True, False], ids=["one-launch", "two-launches"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_backward_launch_modes_match_reference(case: Case, one_launch: bool) -> None:
    """Both ways of launching the Triton backward (both passes in one kernel, or a kernel each)
    give the reference's gradients, whatever the default for the head dim is."""
    skip_if_unrunnable("triton", case)
    from triton_impl.bwd import attention_bwd
    from triton_impl.fwd import attention_fwd

    q, k, v, dout = case_inputs(case)
    q, k, v = (t.detach() for t in (q, k, v))
    scale = case.d ** -0.5
    out, lse = attention_fwd(q, k, v, case.causal, scale)
    poison_allocator((q.shape, q.dtype), (k.shape, k.dtype), (v.shape, v.dtype),
                     (q.shape[:3], torch.float32))
    grads = attention_bwd(dout, q, k, v, out, lse, case.causal, scale, one_launch=one_launch)
    truth, baseline = run_reference(q, k, v, case.causal, dout)
    for name, got, ref, base in zip(("dq", "dk", "dv"), grads, truth[2:], baseline[2:]):
        assert_close(f"one_launch={one_launch} {name}", got, ref, base, "grad", case.dtype,
                     "triton")


# (BLOCK_M, BLOCK_N, num_warps, num_stages[, TMA]) forced on the backward's kernels
BWD_CONFIGS = ([(64, 128, 8, 3), (64, 128, 8, 3, True), (32, 64, 4, 2, True), (128, 64, 8, 3, True)]
               if ON_GPU else [(16, 32, 4, 1), (32, 16, 4, 1)])


@pytest.mark.parametrize("one_launch", [True, False], ids=["one-launch", "two-launches"])
@pytest.mark.parametrize("cfg", BWD_CONFIGS, ids=_config_id)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_backward_forced_config_matches_reference(case: Case, cfg: tuple, one_launch: bool) -> None:
    """The backward launched with a forced config (descriptor loads included, on Hopper) gives the
    reference's gradients in both launch modes and leaves the tuned choice alone."""
    skip_if_unrunnable("triton", case)
    from triton_impl import _config, _tma
    from triton_impl.bwd import attention_bwd
    from triton_impl.fwd import attention_fwd

    q, k, v, dout = case_inputs(case)
    q, k, v = (t.detach() for t in (q, k, v))
    scale = case.d ** -0.5
    out, lse = attention_fwd(q, k, v, case.causal, scale)
    tma, _ = _extras(cfg)
    if tma and not _tma.tma_usable(q, k, v, dout):
        tma = False  # a GPU before Hopper: the same tiles through pointer loads
    config = _config._cfg(*cfg[:4], tma)
    chosen = dict(_config._CHOSEN)
    poison_allocator((q.shape, q.dtype), (k.shape, k.dtype), (v.shape, v.dtype),
                     (q.shape[:3], torch.float32))
    grads = attention_bwd(dout, q, k, v, out, lse, case.causal, scale, one_launch=one_launch,
                          config=config)
    assert _config._CHOSEN == chosen, "a forced config must not replace the tuned choice"
    truth, baseline = run_reference(q, k, v, case.causal, dout)
    for name, got, ref, base in zip(("dq", "dk", "dv"), grads, truth[2:], baseline[2:]):
        assert_close(f"{_config_id(cfg)} {name}", got, ref, base, "grad", case.dtype, "triton")
