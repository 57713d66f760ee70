"""The benchmark's report formatting on synthetic rows (runs without a GPU)."""

from __future__ import annotations

import math

from flashduo.bench.records import NOROPE, OOM, Row
from flashduo.bench.report import (
    format_scaling_table,
    format_sweep_table,
    format_tiles_table,
    format_vit_rope_table,
    summary_lines,
    vit_rope_ratios,
)


def _rows() -> list[Row]:
    ms = {("triton+rope", "fwd"): 0.05, ("triton+rope", "fwdbwd"): 0.30,
          ("rope-compiled+torch-cudnn", "fwd"): 0.20, ("rope-compiled+torch-cudnn", "fwdbwd"): 0.72,
          ("rope-compiled+torch-flash", "fwd"): 0.25, ("rope-compiled+torch-flash", "fwdbwd"): 0.90,
          (NOROPE, "fwd"): 0.09, (NOROPE, "fwdbwd"): 0.43}
    return [Row("vit-rope", impl, 64, False, mode, 197, 256, 6, t, 0.0)
            for (impl, mode), t in ms.items()]


def test_vit_rope_ratios_use_the_fastest_compiled_baseline() -> None:
    ratios = vit_rope_ratios(_rows(), "triton")
    assert abs(ratios["fwdbwd vs compiled"] - 0.72 / 0.30) < 1e-9
    assert abs(ratios["fwd vs cudnn-norope"] - 0.09 / 0.05) < 1e-9


def test_vit_rope_table_and_summary() -> None:
    table = format_vit_rope_table(_rows(), ["triton"])
    assert "| 256 | 6 | 197 | triton+rope | 0.050 | 0.300 |" in table
    assert "fwdbwd speedup vs fastest compiled RoPE + SDPA 2.40" in table
    lines = summary_lines(_rows(), ["triton", "cuda"])
    assert "triton ViT+RoPE fwdbwd vs compiled: 2.40 -> target >= 2.0 met" in lines
    assert "cuda ViT+RoPE fwd vs cudnn-norope: nan -> target >= 1.0 NOT met" in lines
    assert not any("torch-flash over" in line for line in lines), "no sweep ran: no sweep targets"


def test_vit_summary_against_cudnn_at_the_reference_shape() -> None:
    ms = {("triton", "fwdbwd"): 0.40, ("torch-cudnn", "fwdbwd"): 0.60, ("cuda", "fwdbwd"): 0.50}
    rows = [Row("vit", impl, 64, False, mode, 197, 256, 6, t, 0.0) for (impl, mode), t in ms.items()]
    rows.append(Row("vit", "triton", 64, False, "fwdbwd", 577, 256, 16, 9.0, 0.0))  # not the ref
    lines = summary_lines(rows, ["triton", "cuda"])
    assert "triton ViT fwdbwd vs torch-cudnn: 1.50 -> target >= 1.25 met" in lines
    assert "cuda ViT fwdbwd vs torch-cudnn: 1.20 -> target >= 1.25 NOT met" in lines


def test_sweep_table_ratios_and_targets() -> None:
    rows = []
    for n, (mine, base) in {1024: (300.0, 250.0), 2048: (200.0, 250.0)}.items():
        for impl, tf in (("triton", mine), ("torch-flash", base)):
            rows.append(Row("sweep", impl, 64, False, "fwd", n, 16384 // n, 32, 1.0 / tf, tf,
                            "float16"))
    rows.append(Row("sweep", "naive", 64, False, "fwd", 2048, 8, 32, math.nan, math.nan,
                    "float16", OOM))
    table = format_sweep_table(rows, ["triton"])
    assert "| float16 | 64 | 0 | fwd | triton / torch-flash | 1.20 | 0.80 |" in table
    assert "| float16 | 64 | 0 | fwd | naive |  | OOM |" in table
    lines = summary_lines(rows, ["triton"])
    assert ("triton fwd: min triton / torch-flash over N >= 1024 = 0.80 (float16 D=64 causal=0 "
            "N=2048) -> target >= 1.0 NOT met") in lines


def test_scaling_and_tiles_tables() -> None:
    rows = [Row("scaling", "naive", 64, False, "fwd", n, 1, 16, 1.0, 1.0, mem_mb=float(n))
            for n in (1024, 2048)]
    rows.append(Row("scaling", "naive", 64, False, "fwd", 4096, 1, 16, math.nan, math.nan,
                    status=OOM))
    table = format_scaling_table(rows, [])
    assert "| naive | fwd | 1024 | 2048 | OOM |" in table
    assert "scaling: out of memory from naive fwd N=4096" in summary_lines(rows, [])
    tiles = [Row("tiles", "triton", 128, False, "fwd", 4096, 4, 16, 1.0, 400.0, block_m=bm,
                 block_n=bn) for bm in (64, 128) for bn in (32, 64)]
    tiles[-1].status = "ERR"
    heat = format_tiles_table(tiles)
    assert "| BLOCK_M \\ BLOCK_N | 32 | 64 |" in heat
    assert "| 128 | 400 | ERR |" in heat
