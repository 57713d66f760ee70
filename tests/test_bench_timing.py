"""The timing budget is an argument: from ``run_benchmark`` through each cell to ``time_ms`` and
``do_bench``, with no module-level budget to rebind (runs without a GPU)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from flashduo.bench import cells, timing
from flashduo.bench.cells import Context, Shape, run_shape
from flashduo.bench.progress import Progress
from flashduo.bench.timing import (
    CPU_MAX_REPS,
    CPU_MIN_REPS,
    QUICK_BUDGET,
    Budget,
    make_inputs,
    time_ms,
)


def _counting() -> tuple[list[int], timing.Impl]:
    calls = [0]

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return q * 1.0

    return calls, fn


def test_no_module_level_budget() -> None:
    assert not any(hasattr(timing, name) for name in ("BUDGET", "WARMUP_MS", "REP_MS"))


def test_cpu_time_ms_follows_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    sets, dout = make_inputs(1, 1, 4, 8, torch.float32, "cpu", seed=0)
    calls, fn = _counting()
    time_ms(fn, sets, dout, "fwd", Budget(0, 0))
    assert calls[0] == 1 + CPU_MIN_REPS  # one warm-up call, the fewest timed calls
    calls, fn = _counting()
    time_ms(fn, sets, dout, "fwd", Budget(0, 1e6))
    assert calls[0] == 1 + CPU_MAX_REPS
    clock = [0.0]  # a call takes exactly 2 ms of this clock, however loaded the machine is
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    calls, counted = _counting()

    def two_ms(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        clock[0] += 0.002
        return counted(q, k, v)

    time_ms(two_ms, sets, dout, "fwd", Budget(10, 0))
    assert 5 <= calls[0] - CPU_MIN_REPS <= 6  # warm-up calls until 10 ms are spent


def test_gpu_time_ms_passes_the_budget_to_do_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    import triton.testing

    seen = {}
    monkeypatch.setattr(triton.testing, "do_bench", lambda step, **kw: seen.update(kw) or 1.5)
    sets, _ = make_inputs(1, 1, 4, 8, torch.float32, "cpu", seed=0)
    cuda_dout = SimpleNamespace(is_cuda=True)  # do_bench is replaced: nothing runs on a GPU
    assert time_ms(lambda q, k, v: q, sets, cuda_dout, "fwd", Budget(7, 9)) == 1.5
    assert (seen["warmup"], seen["rep"], seen["return_mode"]) == (7, 9, "median")


def _record_budgets(monkeypatch: pytest.MonkeyPatch) -> list[Budget]:
    budgets: list[Budget] = []

    def fake_time_ms(fn, sets, dout, mode, budget: Budget) -> float:
        budgets.append(budget)
        return 1.0

    monkeypatch.setattr(cells, "time_ms", fake_time_ms)
    return budgets


def test_run_shape_times_with_the_context_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    budgets = _record_budgets(monkeypatch)
    budget = Budget(1, 2)
    ctx = Context("cpu", {}, Progress(2), budget)
    shape = Shape("vit", 1, 2, 8, 8, False, torch.float32, ("fwd", "fwdbwd"))
    rows = run_shape(shape, {"x": lambda q, k, v: q * 1.0}, ctx)
    ctx.progress.close()
    assert [r.ms for r in rows] == [1.0, 1.0] and budgets == [budget, budget]


def test_run_benchmark_threads_its_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from flashduo.bench import run_benchmark

    budgets = _record_budgets(monkeypatch)
    kw = dict(providers=["torch-flash"], suites=["vit"], quick=True, device="cpu")
    assert run_benchmark(**kw, out_dir=str(tmp_path / "a"), budget=Budget(3, 4)) == 0
    assert budgets and set(budgets) == {Budget(3, 4)}
    assert "(warm-up 3 ms, rep 4 ms)" in (tmp_path / "a" / "report.md").read_text()
    budgets.clear()
    assert run_benchmark(**kw, out_dir=str(tmp_path / "b")) == 0
    assert set(budgets) == {QUICK_BUDGET}


def test_host_time_is_measured_below_host_below_ms_on_a_gpu_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``host_us`` is NaN on the CPU; on a GPU each cell faster than ``HOST_BELOW_MS`` gets the
    median host time of ``HOST_CALLS`` calls, slower cells none."""
    sets, dout = make_inputs(1, 1, 4, 8, torch.float32, "cpu", seed=0)
    calls, fn = _counting()
    assert math.isnan(timing.host_us(fn, sets, dout, "fwd")) and calls[0] == 0
    seen: list[str] = []
    monkeypatch.setattr(cells, "host_us", lambda fn, sets, dout, mode: seen.append(mode) or 42.0)
    for ms, expected in ((timing.HOST_BELOW_MS / 2, 42.0), (timing.HOST_BELOW_MS * 2, None)):
        monkeypatch.setattr(cells, "time_ms", lambda fn, sets, dout, mode, budget, ms=ms: ms)
        seen.clear()
        ctx = Context("cpu", {}, Progress(2), QUICK_BUDGET)
        shape = Shape("vit", 1, 2, 8, 8, False, torch.float32, ("fwd", "fwdbwd"))
        rows = run_shape(shape, {"x": lambda q, k, v: q * 1.0}, ctx)
        ctx.progress.close()
        if expected is None:
            assert seen == [] and all(math.isnan(r.host_us) for r in rows)
        else:
            assert seen == ["fwd", "fwdbwd"] and [r.host_us for r in rows] == [42.0, 42.0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host time is measured on a GPU only")
def test_host_time_on_the_gpu_is_positive_and_leaves_no_grads() -> None:
    sets, dout = make_inputs(1, 2, 64, 32, torch.float16, "cuda", seed=0)
    us = timing.host_us(lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v),
                        sets, dout, "fwdbwd")
    assert 0 < us < 1e6
    assert all(t.grad is None for s in sets for t in s)
