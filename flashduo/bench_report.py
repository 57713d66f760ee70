"""Presentation of benchmark results (the numbers come from ``flashduo.bench``).

Markdown tables of the sweep (TFLOPS per N, then speed-ratio rows of each flashduo backend over
each baseline) and of the ViT row (ms), the summary lines (min speed ratio vs sdpa-flash over the
sweep lengths N >= TARGET_MIN_N against TARGET, and the worst SDPA check per backend), the
environment header (GPU name and library versions), and the results.json / table.md files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict

import torch

import flashduo
from flashduo.bench_types import (
    CHECK_RTOL,
    DTYPE,
    FLEX,
    MODES,
    NAIVE,
    NOROPE,
    SDPA_IMPLS,
    Check,
    Row,
)

BASELINES = (*SDPA_IMPLS, FLEX)
TARGET = 1.0  # flashduo / sdpa-flash speed ratio to reach ...
# ... except where a backend's issue sets another: the CUDA backend's forward+backward target.
TARGETS = {("cuda", "fwdbwd"): 0.8}
TARGET_MIN_N = 1024  # ... at every sweep length from this one up


def _fmt_tflops(x: float) -> str:
    if math.isnan(x):
        return "nan"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"


def _fmt_ratio(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.2f}"


def _fmt_ms(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3f}"


def _impl_order(present: Iterable[str], backends: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(present))
    known = [*backends, *BASELINES, NAIVE]
    return [x for x in known if x in present] + [x for x in present if x not in known]


def ratio_label(backend: str, baseline: str) -> str:
    """Name of a ratio row, e.g. "triton / sdpa-flash" (speed ratio: > 1 means backend faster)."""
    return f"{backend} / {baseline}"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def format_sweep_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """Markdown table of the sweep: TFLOPS per N for each (D, causal, mode, impl), then ratio rows.

    Ratio rows divide a flashduo backend's TFLOPS by a baseline's at each N of the same run;
    empty cells were not run (flex only runs at some N), "nan" cells failed.
    """
    sweep = [r for r in rows if r.tag == "sweep"]
    if not sweep:
        return "(no sweep results)"
    ns = sorted({r.N for r in sweep})
    cell = {(r.D, r.causal, r.mode, r.impl, r.N): r.tflops for r in sweep}
    lines = [
        _md_row(["D", "causal", "mode", "impl", *map(str, ns)]),
        _md_row(["---"] * (4 + len(ns))),
    ]
    blocks = sorted({(r.D, r.causal, r.mode) for r in sweep}, key=lambda x: (x[0], x[1], x[2]))
    for d, causal, mode in blocks:
        head = [str(d), str(int(causal)), mode]
        impls = _impl_order((r.impl for r in sweep if (r.D, r.causal, r.mode) == (d, causal, mode)),
                            backends)
        for impl in impls:
            vals = [cell.get((d, causal, mode, impl, n)) for n in ns]
            text = ["" if x is None else _fmt_tflops(x) for x in vals]
            lines.append(_md_row([*head, impl, *text]))
        for be in backends:
            if be not in impls:
                continue
            for base in BASELINES:
                if base not in impls:
                    continue
                out = []
                for n in ns:
                    x, y = cell.get((d, causal, mode, be, n)), cell.get((d, causal, mode, base, n))
                    out.append("" if x is None or y is None else _fmt_ratio(x / y))
                lines.append(_md_row([*head, ratio_label(be, base), *out]))
    return "\n".join(lines)


def format_vit_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """Markdown table of the ViT row: ms per mode for each impl, then speed-ratio rows."""
    vit = [r for r in rows if r.tag == "vit"]
    if not vit:
        return "(no ViT results)"
    r0 = vit[0]
    cell = {(r.impl, r.mode): r.ms for r in vit}
    modes = [m for m in MODES if any(r.mode == m for r in vit)]
    title = (f"ViT: B={r0.B} H={r0.H} N={r0.N} D={r0.D} bf16 causal={int(r0.causal)}, ms "
             "(ratio rows: speed ratio, > 1 means the flashduo backend is faster)")
    lines = [title, "", _md_row(["impl", *(f"{m} ms" for m in modes)]),
             _md_row(["---"] * (1 + len(modes)))]
    impls = _impl_order((r.impl for r in vit), backends)
    for impl in impls:
        lines.append(_md_row([impl, *(_fmt_ms(cell.get((impl, m), math.nan)) for m in modes)]))
    for be in backends:
        if be not in impls:
            continue
        for base in (*BASELINES, NAIVE):
            if base not in impls:
                continue
            vals = [cell.get((base, m), math.nan) / cell.get((be, m), math.nan) for m in modes]
            lines.append(_md_row([ratio_label(be, base), *map(_fmt_ratio, vals)]))
    return "\n".join(lines)


ROPE_TARGET_FWDBWD = 2.0  # flashduo+rope at most half the time of compiled RoPE + fastest SDPA
ROPE_TARGET_FWD = 1.0  # flashduo+rope forward no slower than cuDNN SDPA without RoPE
VIT_TARGET_FWDBWD = 1.25  # flashduo without RoPE vs cuDNN SDPA at the ViT shape, forward+backward


def vit_rope_ratios(rows: Sequence[Row], backend: str) -> dict[str, float]:
    """Speed ratios of ``backend``+rope in the ViT-with-RoPE section (> 1: flashduo faster).

    "fwdbwd vs compiled": against the fastest torch.compile'd RoPE + SDPA forward+backward;
    "fwd vs cudnn-norope": forward against cuDNN SDPA without any rotation.
    """
    cell = {(r.impl, r.mode): r.ms for r in rows if r.tag == "vit-rope"}
    mine = f"{backend}+rope"
    compiled = [ms for (impl, mode), ms in cell.items()
                if impl.startswith("rope-compiled+") and mode == "fwdbwd" and not math.isnan(ms)]
    best = min(compiled) if compiled else math.nan
    return {
        "fwdbwd vs compiled": best / cell.get((mine, "fwdbwd"), math.nan),
        "fwd vs cudnn-norope": cell.get((NOROPE, "fwd"), math.nan) / cell.get((mine, "fwd"), math.nan),
    }


def format_vit_rope_table(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """Markdown table of the ViT-with-RoPE section: ms per mode per impl, then the target ratios."""
    sec = [r for r in rows if r.tag == "vit-rope"]
    if not sec:
        return "(no ViT-with-RoPE results)"
    r0 = sec[0]
    cell = {(r.impl, r.mode): r.ms for r in sec}
    lines = [f"ViT with 2D RoPE: B={r0.B} H={r0.H} N={r0.N} D={r0.D} bf16, ms; 'rope-X+Y' rotates in "
             "PyTorch (eager or torch.compile'd) before SDPA backend Y", "",
             _md_row(["impl", *(f"{m} ms" for m in MODES)]), _md_row(["---"] * (1 + len(MODES)))]
    for impl in dict.fromkeys(r.impl for r in sec):
        lines.append(_md_row([impl, *(_fmt_ms(cell.get((impl, m), math.nan)) for m in MODES)]))
    lines.append("")
    for be in backends:
        ratios = vit_rope_ratios(rows, be)
        lines.append(
            f"- {be}+rope: fwdbwd speedup vs fastest compiled RoPE + SDPA "
            f"{_fmt_ratio(ratios['fwdbwd vs compiled'])} (target >= {ROPE_TARGET_FWDBWD}); "
            f"fwd vs cuDNN without RoPE {_fmt_ratio(ratios['fwd vs cudnn-norope'])} "
            f"(target >= {ROPE_TARGET_FWD})")
    return "\n".join(lines)


def summary_lines(
    rows: Sequence[Row], backends: Sequence[str], checks: Sequence[Check] = ()
) -> list[str]:
    """Per backend: target lines for each part that ran; met or NOT met.

    Sweep: per mode, the min speed ratio vs sdpa-flash over N >= 1024. ViT: forward+backward vs
    sdpa-cudnn. ViT+RoPE: the two ratios of ``vit_rope_ratios``. A NaN or missing ratio counts
    against the target (it is reported, not skipped silently).
    """
    sweep = [r for r in rows if r.tag == "sweep"]
    cell = {(r.impl, r.D, r.causal, r.mode, r.N): r.tflops for r in sweep}
    base = "sdpa-flash"
    lines = []
    vit = {(r.impl, r.mode): r.ms for r in rows if r.tag == "vit"}
    for be in backends:
        for mode in MODES if sweep else ():
            keys = sorted({(r.D, r.causal, r.N) for r in sweep
                           if r.mode == mode and r.N >= TARGET_MIN_N and r.impl in (be, base)})
            ratios = []
            for d, causal, n in keys:
                x, y = cell.get((be, d, causal, mode, n)), cell.get((base, d, causal, mode, n))
                ratios.append((math.nan if x is None or y is None else x / y, d, causal, n))
            good = [t for t in ratios if not math.isnan(t[0])]
            missing = len(ratios) - len(good)
            label = f"{be} {mode}: min {ratio_label(be, base)} over N >= {TARGET_MIN_N}"
            target = TARGETS.get((be, mode), TARGET)
            if not good:
                lines.append(f"{label}: no data -> target >= {target} NOT met")
                continue
            r, d, causal, n = min(good)
            met = r >= target and missing == 0
            extra = f", {missing} cell(s) missing/failed" if missing else ""
            lines.append(f"{label} = {r:.2f} (D={d} causal={int(causal)} N={n}{extra}) -> "
                         f"target >= {target} {'met' if met else 'NOT met'}")
        mine = [c for c in checks if c.impl == be]
        if mine:
            worst = max(mine, key=lambda c: math.inf if math.isnan(c.rel_err) else c.rel_err)
            bad = sum(not c.ok for c in mine)
            lines.append(f"{be} check vs SDPA: worst rel err {worst.rel_err:.3g} ({worst.tag} "
                         f"D={worst.D} causal={int(worst.causal)} N={worst.N}); "
                         f"{bad} of {len(mine)} shape(s) over {CHECK_RTOL}")
        if vit:
            ratio = vit.get(("sdpa-cudnn", "fwdbwd"), math.nan) / vit.get((be, "fwdbwd"), math.nan)
            met = ratio >= VIT_TARGET_FWDBWD
            lines.append(f"{be} ViT fwdbwd vs sdpa-cudnn: {ratio:.2f} -> target >= "
                         f"{VIT_TARGET_FWDBWD} {'met' if met else 'NOT met'}")
        if any(r.tag == "vit-rope" for r in rows):
            ratios = vit_rope_ratios(rows, be)
            for key, target in (("fwdbwd vs compiled", ROPE_TARGET_FWDBWD),
                                ("fwd vs cudnn-norope", ROPE_TARGET_FWD)):
                met = ratios[key] >= target  # NaN compares False: a missing cell is not met
                lines.append(f"{be} ViT+RoPE {key}: {ratios[key]:.2f} -> target >= {target} "
                             f"{'met' if met else 'NOT met'}")
    return lines


def environment() -> dict[str, object]:
    """GPU name and library versions for the header and results.json."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    cuda = torch.cuda.is_available()
    return {
        "gpu": torch.cuda.get_device_name() if cuda else "no GPU",
        "capability": list(torch.cuda.get_device_capability()) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_version,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "flashduo": flashduo.__version__,
        "autotune": os.environ.get("FLASHDUO_AUTOTUNE", "1") != "0",
    }


def header_line(env: dict[str, object]) -> str:
    """One line naming the GPU and versions: absolute numbers mean nothing without it."""
    tune = {True: "on", False: "off (FLASHDUO_AUTOTUNE=0)"}.get(env.get("autotune"), "?")
    return (f"GPU: {env['gpu']} | torch {env['torch']} (CUDA {env['cuda']}) | "
            f"triton {env['triton']} | cuDNN {env['cudnn']} | flashduo autotune {tune}")


def write_outputs(
    out_dir: str, rows: Sequence[Row], checks: Sequence[Check], env: dict, table: str
) -> None:
    """Write results.json (env, rows, checks; NaN as null) and table.md into out_dir."""
    os.makedirs(out_dir, exist_ok=True)

    def clean(d: dict) -> dict:
        return {k: (None if isinstance(x, float) and math.isnan(x) else x) for k, x in d.items()}

    data = {
        "env": env,
        "dtype": str(DTYPE).removeprefix("torch."),
        "rows": [clean(asdict(r)) for r in rows],
        "checks": [clean({**asdict(c), "ok": c.ok}) for c in checks],
    }
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table + "\n")
