"""Markdown tables of benchmark results, one per suite (the numbers come from the suites).

Tables: the sweep (TFLOPS per N, or ms per call where TFLOPS would read 0.0, as on the CPU) and
its cells that may read host time, the ViT shapes and the ViT-with-RoPE rows (ms per mode), the
scaling suite (ms and MB per N), the tiles heatmap (TFLOPS per BLOCK_M x BLOCK_N) and the tuned
tiles ``triton`` ran with per cell.
Each configuration's provider rows are followed by the speed-ratio rows of every flashduo backend
over each baseline and over the fastest baseline (``flashduo.bench.facts``: baseline ms / backend
ms, > 1 means the backend is faster), then by the fastest provider. A cell that did not measure
shows its status: OOM, ERR, or "-" (not run); a ratio with a side not measured is empty. Rows
and columns without any value are left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence

from flashduo.bench.facts import FASTEST_BASELINE, fastest, speed_ratio
from flashduo.bench.records import (
    DENSE,
    FLEX,
    OK,
    SDPA_MASK,
    SDPA_PADDED,
    SKIP,
    Row,
    sweep_unit,
)

BASELINES = ("torch-flash", "torch-cudnn", FLEX)  # FA2 (SDPA flash), cuDNN, FlexAttention
FASTEST = "fastest"  # the label of each configuration's fastest-provider row
BLANK = ("", "-")  # cells that hold no value
UNITS = {"tflops": "TFLOPS", "ms": "ms per call"}


def fmt(x: float, kind: str) -> str:
    """A number as a table shows it ("tflops", "mb", "us", "ratio" or "ms"); "" for NaN."""
    if math.isnan(x):
        return ""
    if kind == "tflops":
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"
    if kind == "mb":
        return f"{x:.0f}" if abs(x) >= 10 else f"{x:.2f}"
    if kind == "us":
        return f"{x:.0f}"
    return f"{x:.2f}" if kind == "ratio" else f"{x:.3f}"


def cell_text(row: Row | None, field: str, kind: str) -> str:
    """A table cell: the value when measured, else the row's status; "" when there is no row."""
    if row is None:
        return ""
    if row.status == OK:
        return fmt(getattr(row, field), kind)
    return "-" if row.status == SKIP else row.status


def ratio_label(backend: str, baseline: str) -> str:
    """Name of a ratio row, e.g. "triton / torch-flash" (speed ratio: > 1 means backend faster)."""
    return f"{backend} / {baseline}"


def md_table(head: Sequence[str], body: Iterable[Sequence[str]], keys: int) -> list[str]:
    """Markdown lines of a table with ``keys`` label columns: the body rows with a value (a cell
    past the labels that is not blank), in the value columns with one; [] when none has."""
    body = [list(r) for r in body if any(c not in BLANK for c in r[keys:])]
    if not body:
        return []
    cols = [i for i in range(len(head)) if i < keys or any(r[i] not in BLANK for r in body)]
    lines = [[head[i] for i in cols], ["---"] * len(cols), *([r[i] for i in cols] for r in body)]
    return ["| " + " | ".join(cells) + " |" for cells in lines]


def order(present: Iterable[str], first: Sequence[str]) -> list[str]:
    """``present`` without repeats, the names in ``first`` first (in that order)."""
    present = list(dict.fromkeys(present))
    return [x for x in first if x in present] + [x for x in present if x not in first]


def blocks(rows: Sequence[Row], block_of: Callable[[Row], tuple[str, ...]],
           col_of: Callable[[Row], Hashable], cols: Sequence[Hashable], field: str, kind: str,
           backends: Sequence[str] = (), baselines: Sequence[str] = (),
           compare: bool = True) -> list[list[str]]:
    """Table body: per block (``block_of``'s labels), one row per provider with its ``field`` in
    each column of ``cols`` (``col_of`` of a row); when ``compare``, then the speed ratios of each
    backend over each baseline present and the fastest baseline, and the fastest provider. A
    block and a column name one configuration."""
    grid: dict[tuple[str, ...], dict[Hashable, dict[str, Row]]] = {}
    for r in rows:
        grid.setdefault(block_of(r), {}).setdefault(col_of(r), {})[r.impl] = r
    body = []
    for block, by_col in grid.items():
        cells = [by_col.get(c, {}) for c in cols]
        impls = order((i for cell in cells for i in cell), backends)
        body += [[*block, i, *(cell_text(cell.get(i), field, kind) for cell in cells)]
                 for i in impls]
        if not compare:
            continue
        for be in (b for b in backends if b in impls):
            for base in (*(b for b in baselines if b in impls), FASTEST_BASELINE):
                body.append([*block, ratio_label(be, base),
                             *(fmt(speed_ratio(cell, be, base, backends), "ratio")
                               for cell in cells)])
        body.append([*block, FASTEST, *(fastest(cell) or "" for cell in cells)])
    return body


def _titled(title: str, table: list[str], empty: str) -> str:
    """``title`` over the table's lines, or ``empty`` when the table has none."""
    return "\n".join([title, "", *table]) if table else empty


def format_sweep_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """Markdown table of the sweep: TFLOPS (or ms, see ``sweep_unit``) per N for each (dtype, D,
    causal, mode, impl), then the ratio rows and the fastest provider of each block."""
    sweep = [r for r in rows if r.tag == "sweep"]
    unit = sweep_unit(sweep)
    ns = sorted({r.N for r in sweep})
    body = blocks(sweep, lambda r: (r.dtype, str(r.D), str(int(r.causal)), r.mode),
                  lambda r: r.N, ns, unit, unit, backends, BASELINES)
    table = md_table(["dtype", "D", "causal", "mode", "impl", *map(str, ns)], body, 5)
    if unit == "ms":
        return _titled("ms per call (TFLOPS would read 0.0 at these sizes)", table,
                       "(no sweep results)")
    return "\n".join(table) or "(no sweep results)"


# a cell whose host time is at least this share of its measured time may read host time
HOST_BOUND_SHARE = 0.8


def host_bound(row: Row) -> bool:
    """Whether a measured cell's host time (``host_us``) is at least ``HOST_BOUND_SHARE`` of its
    measured time: ``do_bench`` then reads host time rather than the kernels' (``timing``)."""
    return row.status == OK and row.host_us >= HOST_BOUND_SHARE * 1000 * row.ms


def format_host_bound_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """Markdown table of the sweep cells that may read host time (``host_bound``): ms and host
    µs of each; a sentence where none is (or host time was not measured)."""
    sweep = [r for r in rows if r.tag == "sweep"]
    if all(math.isnan(r.host_us) for r in sweep):
        return "(host time is measured on a CUDA GPU only)"
    bound = [r for r in sweep if host_bound(r)]
    if not bound:
        return (f"No sweep cell's host time reached {HOST_BOUND_SHARE:.0%} of its measured time: "
                "every sweep cell reads its kernels.")
    rank = {name: i for i, name in enumerate(order((r.impl for r in bound), backends))}
    bound.sort(key=lambda r: (r.dtype, r.D, r.causal, r.mode, r.N, rank[r.impl]))
    body = [[r.dtype, str(r.D), str(int(r.causal)), r.mode, str(r.N), r.impl, fmt(r.ms, "ms"),
             fmt(r.host_us, "us")] for r in bound]
    table = md_table(["dtype", "D", "causal", "mode", "N", "impl", "ms", "host µs"], body, 6)
    return _titled(f"Sweep cells whose host time of one call (µs, median of calls issued without "
                   f"synchronizing) is at least {HOST_BOUND_SHARE:.0%} of the time measured above: "
                   "their readings may be host time, and their ratios with them", table, "")


def format_masks_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """Markdown table of the masks suite: per case and N, each provider's TFLOPS on the pairs
    that take part (ms per call where they would read 0.0) in each mode, the ratio rows against
    FlexAttention, SDPA (with the mask, on the padded batch) and the backend's dense attention."""
    masks = [r for r in rows if r.tag.startswith("masks-")]
    unit = sweep_unit(masks)
    modes = list(dict.fromkeys(r.mode for r in masks))
    present = {r.impl for r in masks}
    baselines = [b for b in (FLEX, SDPA_MASK, SDPA_PADDED, *(f"{be}-{DENSE}" for be in backends))
                 if b in present]
    body = blocks(masks, lambda r: (r.tag.removeprefix("masks-"), str(r.N)), lambda r: r.mode,
                  modes, unit, unit, backends, baselines)
    table = md_table(["case", "N", "impl", *(f"{m} {UNITS[unit]}" for m in modes)], body, 3)
    return _titled(f"{UNITS[unit]} per mode, FLOPs counted on the (query, key) pairs that take "
                   "part", table, "(no masks results)")


def _ms_table(rows: Sequence[Row], backends: Sequence[str], baselines: Sequence[str]) -> list[str]:
    """ms per mode for each (B, H, N, impl), then the ratio rows and the fastest provider."""
    modes = list(dict.fromkeys(r.mode for r in rows))
    body = blocks(rows, lambda r: (str(r.B), str(r.H), str(r.N)), lambda r: r.mode, modes,
                  "ms", "ms", backends, baselines)
    return md_table(["B", "H", "N", "impl", *(f"{m} ms" for m in modes)], body, 4)


def format_vit_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """Markdown table of the ViT shapes: ms per mode for each impl, ratio rows, fastest."""
    return _titled("ViT shapes, D=64, non-causal, ms per call",
                   _ms_table([r for r in rows if r.tag == "vit"], backends, BASELINES),
                   "(no ViT results)")


def format_vit_host_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """Markdown table of the ViT shapes' host time: µs of one call per mode for each impl
    (``timing.host_us``), beside which the ms table's times are kernel time only where larger."""
    sec = [r for r in rows if r.tag == "vit"]
    modes = list(dict.fromkeys(r.mode for r in sec))
    body = blocks(sec, lambda r: (str(r.B), str(r.H), str(r.N)), lambda r: r.mode, modes,
                  "host_us", "us", backends, compare=False)
    table = md_table(["B", "H", "N", "impl", *(f"{m} host µs" for m in modes)], body, 4)
    return _titled("ViT shapes, host time of one call (µs, median of calls issued without "
                   "synchronizing); where it exceeds a call's ms above, that cell reads host time",
                   table, "(host time is measured on a CUDA GPU only)")


def rope_backends(backends: Sequence[str]) -> list[str]:
    """The ViT-with-RoPE rows' names of the flashduo backends (``triton+rope``, ...)."""
    return [f"{b}+rope" for b in backends]


def format_vit_rope_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """Markdown table of the ViT-with-RoPE rows: ms per mode per impl, the ratio rows of each
    flashduo backend with ``rope=`` over every PyTorch row, and the fastest provider."""
    sec = [r for r in rows if r.tag == "vit-rope"]
    mine = rope_backends(backends)
    others = [i for i in dict.fromkeys(r.impl for r in sec) if i not in mine]
    return _titled("ViT shapes with 2D RoPE, ms; 'rope-X+Y' rotates in PyTorch (eager, or "
                   "torch.compile'd with the SDPA call) before provider Y",
                   _ms_table(sec, mine, others), "(no ViT-with-RoPE results)")


def format_scaling_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """Markdown tables of the scaling suite: ms (and the fastest provider), then peak MB above the
    inputs, per N; the memory table is replaced by a note when no memory was measured."""
    sec = [r for r in rows if r.tag == "scaling"]
    if not sec:
        return "(no scaling results)"
    r0 = sec[0]
    ns = sorted({r.N for r in sec})
    out = [f"Scaling: B={r0.B} H={r0.H} D={r0.D} {r0.dtype}, non-causal; time (ms) and peak "
           "memory of one call above its inputs (MB)"]
    for field, kind in (("ms", "ms"), ("mem_mb", "mb")):
        body = blocks(sec, lambda r: (r.mode,), lambda r: r.N, ns, field, kind, backends,
                      compare=field == "ms")
        table = md_table(["mode", "impl", *(f"{kind} N={n}" for n in ns)], body, 2)
        out += ["", *(table or ["(peak memory not measured: it needs a CUDA GPU)"])]
    return "\n".join(out)


def format_tiles_table(rows: Sequence[Row]) -> str:
    """Markdown heatmap of the tiles suite: TFLOPS, BLOCK_M rows x BLOCK_N columns."""
    sec = [r for r in rows if r.tag == "tiles"]
    if not sec:
        return "(no tiles results)"
    if all(r.status == SKIP for r in sec):
        return f"Tiles: not run ({sec[0].note})"
    r0 = sec[0]
    bms, bns = sorted({r.block_m for r in sec}), sorted({r.block_n for r in sec})
    cell = {(r.block_m, r.block_n): r for r in sec}
    body = [[str(bm), *(cell_text(cell.get((bm, bn)), "tflops", "tflops") for bn in bns)]
            for bm in bms]
    return "\n".join([f"Tiles: {r0.impl} forward TFLOPS by forced BLOCK_M x BLOCK_N, B={r0.B} "
                      f"H={r0.H} N={r0.N} D={r0.D} {r0.dtype} non-causal", "",
                      *md_table(["BLOCK_M \\ BLOCK_N", *map(str, bns)], body, 1)])


def format_tuned_tiles_table(rows: Sequence[Row]) -> str:
    """Markdown table of the tuned tiles each measured ``triton`` cell ran with (``Row.config``
    outside the tiles suite), one line per suite, D, causal, mode and N."""
    sec = [r for r in rows if r.tag != "tiles" and r.status == OK and r.config]
    body = [[r.tag, str(r.D), str(int(r.causal)), r.mode, str(r.N), r.impl, r.config] for r in sec]
    return _titled("Tiles the tuned triton kernels ran with (BLOCK_MxBLOCK_N, warps, stages; "
                   "tma: descriptor loads; rN: N registers a thread)",
                   md_table(["suite", "D", "causal", "mode", "N", "impl", "tiles"], body, 6),
                   "(no tuned tiles recorded)")
