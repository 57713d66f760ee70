"""The benchmark's facts, tables and summary on synthetic rows (runs without a GPU)."""

from __future__ import annotations

import math
import re

import pytest

from flashduo.bench.facts import (
    FASTEST_BASELINE,
    configurations,
    fastest,
    fastest_counts,
    ratio_spreads,
)
from flashduo.bench.records import NOROPE, OOM, SKIP, Check, Row, attention_flops, tflops
from flashduo.bench.report import (
    format_host_bound_table,
    format_scaling_table,
    format_sweep_table,
    format_tiles_table,
    format_tuned_tiles_table,
    format_vit_host_table,
    format_vit_rope_table,
    format_vit_table,
    md_table,
)
from flashduo.bench.summary import facts_section, summary_lines

BACKENDS = ["triton", "cuda"]
# ms per call of a synthetic fwd sweep (D=64, non-causal); None: not run there (a "-" cell)
SWEEP_MS = {
    "triton": {512: 1.0, 1024: 2.0, 2048: 4.0, 4096: 8.0},
    "cuda": {512: 1.5, 1024: 3.0, 2048: 6.0, 4096: 6.0},
    "torch-flash": {512: 2.0, 1024: 2.4, 2048: 4.0, 4096: 12.0},
    "torch-cudnn": {512: 0.5, 1024: 3.0, 2048: 3.2, 4096: 10.0},
    "torch-flex": {512: None, 1024: 4.0, 2048: None, 4096: None},
    "naive": {512: None, 1024: None, 2048: None, 4096: None},
}


def _row(tag: str, impl: str, n: int, ms: float | None, mode: str = "fwd", b: int = 4,
         h: int = 16, status: str | None = None) -> Row:
    """A row of (b, h, n, 64) bf16 non-causal attention; ``ms`` None: skipped there."""
    st = status or (SKIP if ms is None else "ok")
    ms = math.nan if ms is None or st != "ok" else ms
    tf = tflops(ms, attention_flops(b, h, n, n, 64, False, mode))
    return Row(tag, impl, 64, False, mode, n, b, h, ms, tf, status=st)


def sweep_rows() -> list[Row]:
    return [_row("sweep", impl, n, ms) for impl, by_n in SWEEP_MS.items() for n, ms in by_n.items()]


def _no_nan_or_target(text: str) -> None:
    assert not re.search(r"\bnan\b", text, re.IGNORECASE), text
    assert "target" not in text.lower() and " met" not in text, text


def test_ratio_spreads_min_median_max_over_n_from_1024() -> None:
    spreads = ratio_spreads(sweep_rows(), BACKENDS, ["torch-flash", "torch-cudnn", "torch-flex",
                                                     FASTEST_BASELINE], min_n=1024)
    flash = spreads[("triton", "fwd", "torch-flash")]  # 2.4/2, 4/4, 12/8; N=512 not counted
    assert (flash.lo, flash.median, flash.hi, flash.count) == pytest.approx((1.0, 1.2, 1.5, 3))
    cudnn = spreads[("cuda", "fwd", "torch-cudnn")]  # 3/3, 3.2/6, 10/6
    assert (cudnn.lo, cudnn.median, cudnn.hi, cudnn.count) == pytest.approx((3.2 / 6, 1.0, 10 / 6, 3))
    flex = spreads[("triton", "fwd", "torch-flex")]  # measured together at N=1024 only
    assert (flex.lo, flex.hi, flex.count) == pytest.approx((2.0, 2.0, 1))
    # the fastest baseline per configuration: flash at 1024, cudnn at 2048 and 4096
    best = spreads[("triton", "fwd", FASTEST_BASELINE)]  # 2.4/2, 3.2/4, 10/8
    assert (best.lo, best.median, best.hi, best.count) == pytest.approx((0.8, 1.2, 1.25, 3))
    assert ("triton", "fwd", "naive") not in ratio_spreads(sweep_rows(), BACKENDS, ["naive"])


def test_fastest_per_configuration() -> None:
    cells = {config[5]: cell for config, cell in configurations(sweep_rows()).items()}
    assert {n: fastest(cell) for n, cell in cells.items()} == {
        512: "torch-cudnn", 1024: "triton", 2048: "torch-cudnn", 4096: "cuda"}
    counts, total = fastest_counts(sweep_rows())
    assert total == 4 and counts == {"torch-cudnn": 2, "triton": 1, "cuda": 1}
    rope = [_row("vit-rope", "triton+rope", 197, 0.3), _row("vit-rope", NOROPE, 197, 0.1),
            _row("vit-rope", "rope-compiled+torch-cudnn", 197, 0.4)]
    assert fastest(configurations(rope)[next(iter(configurations(rope)))]) == "triton+rope"
    assert fastest({"x": _row("sweep", "x", 512, None)}) is None


def test_sweep_table_leaves_out_what_has_no_cell() -> None:
    table = format_sweep_table(sweep_rows(), BACKENDS)
    lines = table.splitlines()
    assert lines[0] == "| dtype | D | causal | mode | impl | 512 | 1024 | 2048 | 4096 |"
    assert "| bfloat16 | 64 | 0 | fwd | triton / torch-flash | 2.00 | 1.20 | 1.00 | 1.50 |" in lines
    # torch-flex ran at one N only: its ratio cells elsewhere are empty, not nan
    assert "| bfloat16 | 64 | 0 | fwd | triton / torch-flex |  | 2.00 |  |  |" in lines
    assert "| bfloat16 | 64 | 0 | fwd | cuda / fastest baseline | 0.33 | 0.80 | 0.53 | 1.67 |" in lines
    assert ("| bfloat16 | 64 | 0 | fwd | fastest | torch-cudnn | triton | torch-cudnn | cuda |"
            in lines)
    assert "naive" not in table, "a provider with no cell in the table is left out"
    _no_nan_or_target(table)


def test_md_table_drops_blank_rows_and_columns() -> None:
    lines = md_table(["k", "a", "b", "c"], [["x", "-", "1", ""], ["y", "-", "", "-"],
                                             ["z", "", "OOM", ""]], 1)
    assert lines == ["| k | b |", "| --- | --- |", "| x | 1 |", "| z | OOM |"]
    assert md_table(["k", "a"], [["x", "-"]], 1) == []


def test_vit_and_rope_tables_and_facts() -> None:
    vit = [_row("vit", impl, 197, ms, mode, b=256, h=6)
           for (impl, mode), ms in {("triton", "fwd"): 0.10, ("triton", "fwdbwd"): 0.40,
                                    ("torch-cudnn", "fwd"): 0.08, ("torch-cudnn", "fwdbwd"): 0.60,
                                    ("cuda", "fwd"): 0.20, ("cuda", "fwdbwd"): None}.items()]
    rope = [_row("vit-rope", impl, 197, ms, mode, b=256, h=6)
            for (impl, mode), ms in {("triton+rope", "fwd"): 0.05, ("triton+rope", "fwdbwd"): 0.30,
                                     ("rope-compiled+torch-cudnn", "fwd"): 0.20,
                                     ("rope-compiled+torch-cudnn", "fwdbwd"): 0.72,
                                     (NOROPE, "fwd"): 0.04, (NOROPE, "fwdbwd"): 0.43}.items()]
    table = format_vit_table(vit, BACKENDS)
    assert "| 256 | 6 | 197 | triton / torch-cudnn | 0.80 | 1.50 |" in table
    assert "| 256 | 6 | 197 | cuda / torch-cudnn | 0.40 |  |" in table
    assert "| 256 | 6 | 197 | fastest | torch-cudnn | triton |" in table
    rope_table = format_vit_rope_table(rope, BACKENDS)
    assert "| 256 | 6 | 197 | triton+rope / rope-compiled+torch-cudnn | 4.00 | 2.40 |" in rope_table
    assert "| 256 | 6 | 197 | triton+rope / torch-cudnn-norope | 0.80 | 1.43 |" in rope_table
    assert "| 256 | 6 | 197 | fastest | triton+rope | triton+rope |" in rope_table, "norope rotates nothing"
    assert "cuda+rope" not in rope_table
    facts = facts_section(sweep_rows() + vit + rope, BACKENDS)
    assert "| sweep N >= 1024 | triton | fwd | 1.00 / 1.20 / 1.50 (3) |" in facts
    assert "| vit | triton | fwdbwd |  | 1.50 / 1.50 / 1.50 (1) |" in facts
    assert "| vit-rope | triton+rope | fwd | 4.00 / 4.00 / 4.00 (1) | 0.80 / 0.80 / 0.80 (1) |" in facts
    assert "- sweep: torch-cudnn 2 of 4, triton 1 of 4, cuda 1 of 4" in facts
    assert "- vit-rope: triton+rope 2 of 2" in facts
    for text in (table, rope_table, facts):
        _no_nan_or_target(text)


def test_facts_without_a_flashduo_backend_say_so() -> None:
    rows = [r for r in sweep_rows() if r.impl not in BACKENDS]
    facts = facts_section(rows, [])
    assert "No speed ratios: no flashduo backend was measured" in facts
    assert "- sweep: torch-cudnn 3 of 4, torch-flash 1 of 4" in facts
    _no_nan_or_target(facts)


def test_scaling_and_tiles_tables() -> None:
    rows = [Row("scaling", "naive", 64, False, "fwd", n, 1, 16, 1.0, 1.0, mem_mb=float(n))
            for n in (1024, 2048)]
    rows.append(_row("scaling", "naive", 4096, None, b=1, status=OOM))
    table = format_scaling_table(rows, [])
    assert "| fwd | naive | 1024 | 2048 | OOM |" in table
    assert "| fwd | fastest | naive | naive |  |" in table
    assert "scaling: out of memory from naive fwd N=4096" in summary_lines(rows, [])
    cpu = [Row("scaling", "naive", 64, False, "fwd", 64, 1, 16, 1.0, 1e-4)]  # memory NaN
    cpu_table = format_scaling_table(cpu, [])
    assert "peak memory not measured" in cpu_table and "mb N=" not in cpu_table
    _no_nan_or_target(cpu_table)
    tiles = [Row("tiles", "triton", 128, False, "fwd", 4096, 4, 16, 1.0, 400.0, block_m=bm,
                 block_n=bn) for bm in (64, 128) for bn in (32, 64)]
    tiles[-1].status = "ERR"
    heat = format_tiles_table(tiles)
    assert "| BLOCK_M \\ BLOCK_N | 32 | 64 |" in heat
    assert "| 128 | 400 | ERR |" in heat
    skipped = [Row("tiles", "triton", 128, False, "fwd", 4096, 4, 16, math.nan, math.nan,
                   status=SKIP, note="needs a CUDA GPU")]
    assert format_tiles_table(skipped) == "Tiles: not run (needs a CUDA GPU)"


def test_tuned_tiles_table() -> None:
    """The tiles triton's tuned kernels ran with, per measured cell; not the tiles suite's forced
    configs, not cells that did not run."""
    ran = _row("sweep", "triton", 1024, 0.5, mode="fwdbwd")
    ran.config = "fwd 128x64 w8 s2 r128, bwd 64x128 w8 s3"
    failed = _row("sweep", "triton", 4096, 0.5)
    failed.config, failed.status = "fwd 64x64 w4 s3", "ERR"
    forced = Row("tiles", "triton", 128, False, "fwd", 4096, 4, 16, 1.0, 400.0, block_m=64,
                 block_n=64, config="BLOCK_M=64 BLOCK_N=64")
    table = format_tuned_tiles_table([ran, failed, forced, _row("sweep", "torch-cudnn", 1024, 0.4)])
    assert "| sweep | 64 | 0 | fwdbwd | 1024 | triton | fwd 128x64 w8 s2 r128, bwd 64x128 w8 s3 |" in table
    assert "64x64 w4 s3" not in table and "BLOCK_M=64" not in table and "torch-cudnn" not in table
    assert format_tuned_tiles_table([forced]) == "(no tuned tiles recorded)"


def test_sweep_in_ms_where_tflops_read_zero_and_checks() -> None:
    cpu = [_row("sweep", "torch-flash", 64, 8.0, b=8, h=4), _row("sweep", "naive", 64, 95.0, b=8, h=4)]
    table = format_sweep_table(cpu, [])
    assert table.startswith("ms per call")
    assert "| bfloat16 | 64 | 0 | fwd | torch-flash | 8.000 |" in table
    checks = [Check("sweep", "triton", 64, False, 1024, 1e-3),
              Check("sweep", "triton", 64, True, 2048, math.nan)]
    line = summary_lines([], ["triton"], checks)[0]
    assert line.startswith("triton check vs SDPA: worst rel err not finite (sweep D=64 causal=1")
    assert line.endswith("1 of 2 shape(s) over 0.05")


def test_vit_host_table_lists_host_time_per_mode() -> None:
    rows = [_row("vit", impl, 197, 0.1, mode, b=256, h=6) for impl in ("triton", "torch-cudnn")
            for mode in ("fwd", "fwdbwd")]
    assert format_vit_host_table(rows, BACKENDS) == "(host time is measured on a CUDA GPU only)"
    for r, us in zip(rows, (61.4, 180.0, 20.2, 35.0), strict=True):
        r.host_us = us
    table = format_vit_host_table(rows, BACKENDS)
    assert "| 256 | 6 | 197 | triton | 61 | 180 |" in table
    assert "| 256 | 6 | 197 | torch-cudnn | 20 | 35 |" in table
    assert "fastest" not in table and " / " not in table.split("\n", 2)[2]


def test_host_bound_table_lists_the_cells_whose_host_time_nears_their_time() -> None:
    rows = [_row("sweep", impl, n, ms) for impl, n, ms in
            (("triton", 1024, 0.40), ("torch-cudnn", 1024, 0.23), ("triton", 2048, 0.60))]
    assert format_host_bound_table(rows, BACKENDS) == "(host time is measured on a CUDA GPU only)"
    for r, us in zip(rows, (373.0, 72.0, 200.0), strict=True):
        r.host_us = us
    table = format_host_bound_table(rows, BACKENDS)
    assert "| bfloat16 | 64 | 0 | fwd | 1024 | triton | 0.400 | 373 |" in table
    assert "torch-cudnn" not in table and "| 2048 |" not in table
    rows[0].host_us = 319.0  # just under 80 % of 0.4 ms
    assert "every sweep cell reads its kernels" in format_host_bound_table(rows, BACKENDS)
