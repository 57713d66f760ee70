"""The masks suite (``flashduo.bench.masks``): its pair counts, and every provider of each case
computing the same attention at small sizes (reference and SDPA on the CPU; the triton backend
and FlexAttention too on a GPU), forward and backward; its table on synthetic rows."""

from __future__ import annotations

import math

import pytest
import torch

import reference
from flashduo.bench import masks
from flashduo.bench.records import FLEX, SDPA_MASK, Row, pair_flops
from flashduo.bench.report import format_masks_table
from flashduo.bench.suites import Plan
from tests.cases import DEVICE, ON_GPU

PROVIDERS = ["reference", "triton", FLEX] if ON_GPU else ["reference"]


@pytest.mark.parametrize("n, left", [(1, 0), (7, 3), (64, 64), (100, 9), (300, 512)])
def test_window_pairs_count_the_band(n: int, left: int) -> None:
    seen = reference.attention_ref(torch.zeros(1, 1, n, 1), torch.zeros(1, 1, n, 1),
                                   torch.zeros(1, 1, n, 1), True, window=(left, 0))[1]
    assert masks.window_pairs(n, left) == round(torch.exp(seen).sum().item())
    assert pair_flops(10, 64, "fwdbwd") == 4 * 10 * 64 * 3.5


def _small_cases(plan: Plan) -> list[masks.Case]:
    return [masks.window_case(plan, 96, 17), masks.varlen_case(plan, 5, (3, 40)),
            masks.padding_case(plan, 3, 48), masks.softcap_case(plan, 2, 64)]


@pytest.mark.parametrize("index", range(4), ids=["window", "varlen", "key-padding", "softcap"])
def test_every_provider_of_a_case_computes_the_same(index: int) -> None:
    plan = Plan(PROVIDERS, {}, device=DEVICE)
    case = _small_cases(plan)[index]
    s = case.shape
    dtype = torch.bfloat16 if ON_GPU else torch.float32
    gen = torch.Generator(device=DEVICE).manual_seed(index)
    q, k, v = (torch.randn(s.b, s.h, s.n, s.d, generator=gen, device=DEVICE).to(dtype)
               .requires_grad_() for _ in range(3))
    dout = torch.randn(q.shape, generator=gen, device=DEVICE).to(dtype)
    results = {}
    for name, fn in case.impls.items():
        if isinstance(fn, str) or name.endswith(masks.DENSE):
            continue
        out = fn(q, k, v)
        results[name] = (out, *torch.autograd.grad(out, (q, k, v), dout))
    assert len(results) == ((3, 4, 3, 3) if ON_GPU else (1, 2, 2, 1))[index], list(results)
    tol = 3e-2 if ON_GPU else 1e-5
    want = results.pop("reference")
    for name, got in results.items():
        for what, a, b in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
            scale = b.abs().max().item() or 1.0
            assert (a.float() - b.float()).abs().max().item() <= tol * scale, (name, what)


def test_masks_table_states_the_ratios() -> None:
    def row(impl: str, ms: float, mode: str) -> Row:
        return Row("masks-key-padding", impl, 64, False, mode, 1024, 32, 16, ms,
                   pair_flops(32 * 16 * 1024 * 768, 64, mode) / (ms * 1e-3) / 1e12, "bfloat16",
                   "ok")

    rows = [row(impl, ms * (3.5 if mode == "fwdbwd" else 1), mode) for impl, ms in
            (("triton", 0.5), (SDPA_MASK, 1.0)) for mode in ("fwd", "fwdbwd")]
    table = format_masks_table(rows, ["triton"])
    assert "| key-padding | 1024 | triton / sdpa-mask | 2.00 | 2.00 |" in table
    assert "TFLOPS" in table and not math.isnan(rows[0].tflops)


def test_masks_suite_runs_when_named(tmp_path) -> None:
    """``run_benchmark(suites=["masks"])`` on the CPU: the SDPA rows at tiny sizes, its table in
    the report; the default run does not include it."""
    from flashduo.bench.driver import SUITE_NAMES, run_benchmark

    assert "masks" not in SUITE_NAMES
    code = run_benchmark(["torch-flash"], suites=["masks"], quick=True, out_dir=str(tmp_path),
                         device="cpu")
    assert code == 0
    report = (tmp_path / "report.md").read_text()
    assert "## Masks and packed sequences" in report
    assert "| key-padding | 64 | sdpa-mask |" in report and "| varlen |" in report
