"""The benchmark's report formatting on synthetic rows (runs without a GPU)."""

from __future__ import annotations

from flashduo.bench_report import format_vit_rope_table, summary_lines, vit_rope_ratios
from flashduo.bench_types import NOROPE, Row


def _rows() -> list[Row]:
    ms = {("triton+rope", "fwd"): 0.05, ("triton+rope", "fwdbwd"): 0.30,
          ("rope-compiled+sdpa-cudnn", "fwd"): 0.20, ("rope-compiled+sdpa-cudnn", "fwdbwd"): 0.72,
          ("rope-compiled+sdpa-flash", "fwd"): 0.25, ("rope-compiled+sdpa-flash", "fwdbwd"): 0.90,
          (NOROPE, "fwd"): 0.09, (NOROPE, "fwdbwd"): 0.43}
    return [Row("vit-rope", impl, 64, False, mode, 197, 256, 6, t, 0.0)
            for (impl, mode), t in ms.items()]


def test_vit_rope_ratios_use_the_fastest_compiled_baseline() -> None:
    ratios = vit_rope_ratios(_rows(), "triton")
    assert abs(ratios["fwdbwd vs compiled"] - 0.72 / 0.30) < 1e-9
    assert abs(ratios["fwd vs cudnn-norope"] - 0.09 / 0.05) < 1e-9


def test_vit_rope_table_and_summary() -> None:
    table = format_vit_rope_table(_rows(), ["triton"])
    assert "| triton+rope | 0.050 | 0.300 |" in table
    assert "fwdbwd speedup vs fastest compiled RoPE + SDPA 2.40" in table
    lines = summary_lines(_rows(), ["triton", "cuda"])
    assert "triton ViT+RoPE fwdbwd vs compiled: 2.40 -> target >= 2.0 met" in lines
    assert "cuda ViT+RoPE fwd vs cudnn-norope: nan -> target >= 1.0 NOT met" in lines
    assert not any("sdpa-flash over" in line for line in lines), "no sweep ran: no sweep targets"


def test_vit_summary_against_cudnn() -> None:
    ms = {("triton", "fwdbwd"): 0.40, ("sdpa-cudnn", "fwdbwd"): 0.60, ("cuda", "fwdbwd"): 0.50}
    rows = [Row("vit", impl, 64, False, mode, 197, 256, 6, t, 0.0) for (impl, mode), t in ms.items()]
    lines = summary_lines(rows, ["triton", "cuda"])
    assert "triton ViT fwdbwd vs sdpa-cudnn: 1.50 -> target >= 1.25 met" in lines
    assert "cuda ViT fwdbwd vs sdpa-cudnn: 1.20 -> target >= 1.25 NOT met" in lines
