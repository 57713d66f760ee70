"""Markdown tables and summary lines of benchmark results (the numbers come from the suites).

Tables: the sweep (TFLOPS per N, then speed-ratio rows of each fused flashduo backend over the
PyTorch baselines), the ViT shapes and the ViT-with-RoPE rows (ms), the scaling suite (ms and MB
per N) and the tiles heatmap (TFLOPS per BLOCK_M x BLOCK_N). Cells that did not measure show
their status: OOM, ERR, or "-" (not run here). Summary: per fused backend, the min speed ratio vs
torch-flash over the sweep lengths N >= TARGET_MIN_N against its target, the ViT and ViT+RoPE
ratios against theirs at the reference ViT shape (ViT-S, N = 197), and the worst SDPA check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from flashduo.bench.records import CHECK_RTOL, FLEX, NAIVE, NOROPE, OK, OOM, SKIP, Check, Row

BASELINES = ("torch-flash", "torch-cudnn", FLEX)
TEACHING = ("triton-unfused",)  # flashduo backends shown for comparison, without speed targets
TARGET = 1.0  # flashduo / torch-flash speed ratio to reach ...
# ... except where a backend's issue sets another: the CUDA backend's forward+backward target.
TARGETS = {("cuda", "fwdbwd"): 0.8}
TARGET_MIN_N = 1024  # ... at every sweep length from this one up
VIT_REF = {"N": 197, "H": 6}  # ViT-S at 224 px: the shape of the ViT targets
ROPE_TARGET_FWDBWD = 2.0  # flashduo+rope at most half the time of compiled RoPE + fastest SDPA
ROPE_TARGET_FWD = 1.0  # flashduo+rope forward no slower than cuDNN SDPA without RoPE
VIT_TARGET_FWDBWD = 1.25  # flashduo without RoPE vs cuDNN SDPA at the ViT shape, forward+backward


def _fmt(x: float, kind: str) -> str:
    if math.isnan(x):
        return "nan"
    if kind == "tflops":
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"
    if kind == "mb":
        return f"{x:.0f}" if abs(x) >= 10 else f"{x:.2f}"
    return f"{x:.2f}" if kind == "ratio" else f"{x:.3f}"


def cell_text(row: Row | None, field: str, kind: str) -> str:
    """A table cell: the value when measured, else the row's status; "" when there is no row."""
    if row is None:
        return ""
    if row.status == OK:
        return _fmt(getattr(row, field), kind)
    return "-" if row.status == SKIP else row.status


def ratio_label(backend: str, baseline: str) -> str:
    """Name of a ratio row, e.g. "triton / torch-flash" (speed ratio: > 1 means backend faster)."""
    return f"{backend} / {baseline}"


def target_backends(providers: Sequence[str], flashduo_names: Iterable[str]) -> list[str]:
    """The providers that get speed targets: flashduo backends other than the teaching ones."""
    names = set(flashduo_names)
    return [p for p in providers if p in names and p not in TEACHING]


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_head(cells: Sequence[str]) -> list[str]:
    return [_md_row(cells), _md_row(["---"] * len(cells))]


def _order(present: Iterable[str], first: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(present))
    return [x for x in first if x in present] + [x for x in present if x not in first]


def _speed(x: Row | None, y: Row | None) -> str:
    """y.ms / x.ms as text ("" when either is missing, "nan" when either did not measure)."""
    if x is None or y is None:
        return ""
    return _fmt(y.ms / x.ms if x.status == OK and y.status == OK else math.nan, "ratio")


def format_sweep_table(rows: Sequence[Row], targets: Sequence[str]) -> str:
    """Markdown table of the sweep: TFLOPS per N for each (dtype, D, causal, mode, impl), then
    speed-ratio rows of each target backend over each baseline at every N of the same run."""
    sweep = [r for r in rows if r.tag == "sweep"]
    if not sweep:
        return "(no sweep results)"
    ns = sorted({r.N for r in sweep})
    cell = {(r.dtype, r.D, r.causal, r.mode, r.impl, r.N): r for r in sweep}
    lines = _md_head(["dtype", "D", "causal", "mode", "impl", *map(str, ns)])
    blocks = dict.fromkeys((r.dtype, r.D, r.causal, r.mode) for r in sweep)
    for block in blocks:
        head = [block[0], str(block[1]), str(int(block[2])), block[3]]
        impls = _order((r.impl for r in sweep if (r.dtype, r.D, r.causal, r.mode) == block),
                       targets)
        for impl in impls:
            lines.append(_md_row([*head, impl,
                                  *(cell_text(cell.get((*block, impl, n)), "tflops", "tflops")
                                    for n in ns)]))
        for be in (t for t in targets if t in impls):
            for base in (b for b in BASELINES if b in impls):
                lines.append(_md_row([*head, ratio_label(be, base),
                                      *(_speed(cell.get((*block, be, n)), cell.get((*block, base, n)))
                                        for n in ns)]))
    return "\n".join(lines)


def _ms_table(rows: Sequence[Row], tag: str, targets: Sequence[str], bases: Sequence[str]) -> list[str]:
    sec = [r for r in rows if r.tag == tag]
    modes = list(dict.fromkeys(r.mode for r in sec))
    cell = {(r.H, r.N, r.impl, r.mode): r for r in sec}
    lines = _md_head(["B", "H", "N", "impl", *(f"{m} ms" for m in modes)])
    for h, n, b in dict.fromkeys((r.H, r.N, r.B) for r in sec):
        impls = _order((r.impl for r in sec if (r.H, r.N) == (h, n)), targets)
        for impl in impls:
            lines.append(_md_row([str(b), str(h), str(n), impl,
                                  *(cell_text(cell.get((h, n, impl, m)), "ms", "ms") for m in modes)]))
        for be in (t for t in targets if t in impls):
            for base in (x for x in bases if x in impls):
                lines.append(_md_row([str(b), str(h), str(n), ratio_label(be, base),
                                      *(_speed(cell.get((h, n, be, m)), cell.get((h, n, base, m)))
                                        for m in modes)]))
    return lines


def format_vit_table(rows: Sequence[Row], targets: Sequence[str]) -> str:
    """Markdown table of the ViT shapes: ms per mode for each impl, then speed-ratio rows."""
    if not any(r.tag == "vit" for r in rows):
        return "(no ViT results)"
    title = ("ViT shapes, D=64, non-causal, ms per call (ratio rows: speed ratio, > 1 means the "
             "flashduo backend is faster)")
    return "\n".join([title, "", *_ms_table(rows, "vit", targets, (*BASELINES, NAIVE))])


def _ref_cells(rows: Sequence[Row], tag: str) -> dict[tuple[str, str], float]:
    """(impl, mode) -> ms of the measured rows of ``tag`` at the reference ViT shape."""
    return {(r.impl, r.mode): r.ms for r in rows if r.tag == tag and r.N == VIT_REF["N"]
            and r.H == VIT_REF["H"] and r.status == OK}


def vit_rope_ratios(rows: Sequence[Row], backend: str) -> dict[str, float]:
    """Speed ratios of ``backend``+rope at the reference ViT shape (> 1: flashduo faster).

    "fwdbwd vs compiled": against the fastest torch.compile'd RoPE + SDPA forward+backward;
    "fwd vs cudnn-norope": forward against cuDNN SDPA without any rotation.
    """
    cell = _ref_cells(rows, "vit-rope")
    mine = f"{backend}+rope"
    compiled = [ms for (impl, mode), ms in cell.items()
                if impl.startswith("rope-compiled+") and mode == "fwdbwd" and not math.isnan(ms)]
    best = min(compiled) if compiled else math.nan
    return {
        "fwdbwd vs compiled": best / cell.get((mine, "fwdbwd"), math.nan),
        "fwd vs cudnn-norope": cell.get((NOROPE, "fwd"), math.nan) / cell.get((mine, "fwd"), math.nan),
    }


def format_vit_rope_table(rows: Sequence[Row], targets: Sequence[str]) -> str:
    """Markdown table of the ViT-with-RoPE rows: ms per mode per impl, then the target ratios."""
    if not any(r.tag == "vit-rope" for r in rows):
        return "(no ViT-with-RoPE results)"
    lines = ["ViT shapes with 2D RoPE, ms; 'rope-X+Y' rotates in PyTorch (eager or "
             "torch.compile'd) before provider Y", "", *_ms_table(rows, "vit-rope", (), ()), ""]
    for be in targets:
        ratios = vit_rope_ratios(rows, be)
        lines.append(
            f"- {be}+rope at N={VIT_REF['N']} H={VIT_REF['H']}: fwdbwd speedup vs fastest compiled "
            f"RoPE + SDPA {_fmt(ratios['fwdbwd vs compiled'], 'ratio')} (target >= "
            f"{ROPE_TARGET_FWDBWD}); fwd vs cuDNN without RoPE "
            f"{_fmt(ratios['fwd vs cudnn-norope'], 'ratio')} (target >= {ROPE_TARGET_FWD})")
    return "\n".join(lines)


def format_scaling_table(rows: Sequence[Row], targets: Sequence[str]) -> str:
    """Markdown tables of the scaling suite: ms, then peak MB above the inputs, per N."""
    sec = [r for r in rows if r.tag == "scaling"]
    if not sec:
        return "(no scaling results)"
    r0 = sec[0]
    ns = sorted({r.N for r in sec})
    cell = {(r.impl, r.mode, r.N): r for r in sec}
    keys = dict.fromkeys((r.impl, r.mode) for r in sec)
    order = _order((k[0] for k in keys), targets)
    keys = sorted(keys, key=lambda k: (order.index(k[0]), k[1]))
    out = [f"Scaling: B={r0.B} H={r0.H} D={r0.D} {r0.dtype}, non-causal; time (ms) and peak "
           "memory of one call above its inputs (MB)"]
    for field, kind in (("ms", "ms"), ("mem_mb", "mb")):
        out += ["", *_md_head(["impl", "mode", *(f"{kind} N={n}" for n in ns)])]
        for impl, mode in keys:
            out.append(_md_row([impl, mode, *(cell_text(cell.get((impl, mode, n)), field, kind)
                                              for n in ns)]))
    return "\n".join(out)


def format_tiles_table(rows: Sequence[Row]) -> str:
    """Markdown heatmap of the tiles suite: TFLOPS, BLOCK_M rows x BLOCK_N columns."""
    sec = [r for r in rows if r.tag == "tiles"]
    if not sec:
        return "(no tiles results)"
    if all(r.status == SKIP for r in sec):
        return f"Tiles: skipped ({sec[0].note})"
    r0 = sec[0]
    bms, bns = sorted({r.block_m for r in sec}), sorted({r.block_n for r in sec})
    cell = {(r.block_m, r.block_n): r for r in sec}
    lines = [f"Tiles: {r0.impl} forward TFLOPS by forced BLOCK_M x BLOCK_N, B={r0.B} H={r0.H} "
             f"N={r0.N} D={r0.D} {r0.dtype} non-causal", "",
             *_md_head(["BLOCK_M \\ BLOCK_N", *map(str, bns)])]
    for bm in bms:
        lines.append(_md_row([str(bm), *(cell_text(cell.get((bm, bn)), "tflops", "tflops")
                                         for bn in bns)]))
    return "\n".join(lines)


def _sweep_target_lines(rows: Sequence[Row], be: str) -> list[str]:
    sweep = [r for r in rows if r.tag == "sweep"]
    base = BASELINES[0]
    cell = {(r.impl, r.dtype, r.D, r.causal, r.mode, r.N): r for r in sweep}
    lines = []
    for mode in dict.fromkeys(r.mode for r in sweep):
        keys = sorted({(r.dtype, r.D, r.causal, r.N) for r in sweep
                       if r.mode == mode and r.N >= TARGET_MIN_N and r.impl in (be, base)})
        ratios = []
        for dt, d, causal, n in keys:
            x, y = cell.get((be, dt, d, causal, mode, n)), cell.get((base, dt, d, causal, mode, n))
            ok = x is not None and y is not None and x.status == OK and y.status == OK
            ratios.append((x.tflops / y.tflops if ok else math.nan, dt, d, causal, n))
        good = [t for t in ratios if not math.isnan(t[0])]
        missing = len(ratios) - len(good)
        label = f"{be} {mode}: min {ratio_label(be, base)} over N >= {TARGET_MIN_N}"
        target = TARGETS.get((be, mode), TARGET)
        if not good:
            lines.append(f"{label}: no data -> target >= {target} NOT met")
            continue
        r, dt, d, causal, n = min(good)
        met = r >= target and missing == 0
        extra = f", {missing} cell(s) missing/failed" if missing else ""
        lines.append(f"{label} = {r:.2f} ({dt} D={d} causal={int(causal)} N={n}{extra}) -> "
                     f"target >= {target} {'met' if met else 'NOT met'}")
    return lines


def summary_lines(
    rows: Sequence[Row], targets: Sequence[str], checks: Sequence[Check] = ()
) -> list[str]:
    """Per target backend: target lines for each part that ran, met or NOT met, and its worst SDPA
    check. A NaN or missing ratio counts against the target (reported, not skipped silently)."""
    lines = []
    vit = _ref_cells(rows, "vit")
    has_vit = any(r.tag == "vit" for r in rows)
    for be in targets:
        lines += _sweep_target_lines(rows, be)
        mine = [c for c in checks if c.impl == be]
        if mine:
            worst = max(mine, key=lambda c: math.inf if math.isnan(c.rel_err) else c.rel_err)
            bad = sum(not c.ok for c in mine)
            lines.append(f"{be} check vs SDPA: worst rel err {worst.rel_err:.3g} ({worst.tag} "
                         f"D={worst.D} causal={int(worst.causal)} N={worst.N}); "
                         f"{bad} of {len(mine)} shape(s) over {CHECK_RTOL}")
        if has_vit:
            ratio = vit.get(("torch-cudnn", "fwdbwd"), math.nan) / vit.get((be, "fwdbwd"), math.nan)
            met = ratio >= VIT_TARGET_FWDBWD
            lines.append(f"{be} ViT fwdbwd vs torch-cudnn: {ratio:.2f} -> target >= "
                         f"{VIT_TARGET_FWDBWD} {'met' if met else 'NOT met'}")
        if any(r.tag == "vit-rope" for r in rows):
            ratios = vit_rope_ratios(rows, be)
            for key, target in (("fwdbwd vs compiled", ROPE_TARGET_FWDBWD),
                                ("fwd vs cudnn-norope", ROPE_TARGET_FWD)):
                met = ratios[key] >= target  # NaN compares False: a missing cell is not met
                lines.append(f"{be} ViT+RoPE {key}: {ratios[key]:.2f} -> target >= {target} "
                             f"{'met' if met else 'NOT met'}")
    oom = sorted({f"{r.impl} {r.mode}" for r in rows if r.tag == "scaling" and r.status == OOM})
    if oom:
        first = {}
        for r in rows:
            if r.tag == "scaling" and r.status == OOM:
                key = f"{r.impl} {r.mode}"
                first[key] = min(first.get(key, r.N), r.N)
        lines.append("scaling: out of memory from " + ", ".join(f"{k} N={first[k]}" for k in oom))
    return lines
