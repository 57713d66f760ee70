"""``run_benchmark``: pick the providers that can run, run the chosen suites with one progress bar,
print the tables and summary, and write CSV, JSON, PNG plots and the markdown report.

On a GPU the suites run at their real sizes. On the CPU (``device="cpu"``) they run at tiny sizes
with the PyTorch providers only, so the outputs can be produced and checked anywhere; those
timings are illustrative, the ones to quote need a GPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import torch

from flashduo.bench import files, plots, report, timing
from flashduo.bench.cells import Context
from flashduo.bench.progress import Progress
from flashduo.bench.providers import (
    FlexFactory,
    is_flashduo,
    unavailable_reason,
    unknown_providers,
)
from flashduo.bench.records import ERR, FLEX, FLOP_NOTE, environment, header_line
from flashduo.bench.suites import HEAD_DIMS, SUITES, Plan
from flashduo.bench.tiles import run_tiles, tiles_count
from flashduo.bench.timing import CudaContextLost, short
from flashduo.registry import registered_backends

SUITE_NAMES = ("sweep", "vit", "scaling", "tiles")
CPU_SIZES = {"tokens": 512, "hidden": 256, "head_dims": (64,), "seqlens": (64, 128)}


def _unavailable(providers: Sequence[str], device: str) -> dict[str, str]:
    """Provider -> why it cannot run here, for those that cannot (each printed once)."""
    skipped = {}
    for name in providers:
        why = unavailable_reason(name, device)
        if why:
            skipped[name] = why
            print(f"SKIP provider {name}: {why}", flush=True)
    return skipped


def _flex(plan: Plan) -> None:
    if FLEX in plan.providers:
        try:
            plan.flex = FlexFactory()
        except Exception as exc:
            print(f"SKIP provider {FLEX}: {short(exc)}", flush=True)
            plan.skipped[FLEX] = short(exc)
            plan.providers.remove(FLEX)


def make_plan(providers: Sequence[str], device: str, quick: bool, full: bool,
              head_dims: Sequence[int] | None, seqlens: Sequence[int] | None,
              dtypes: Sequence[torch.dtype] | None, materializing_everywhere: bool = False) -> Plan:
    """What the run measures; raises ``ValueError`` for an unknown provider name."""
    unknown = unknown_providers(providers)
    if unknown:
        raise ValueError(f"unknown provider(s) {', '.join(unknown)}; known: "
                         f"{', '.join(_known())}")
    default_dtypes = (torch.float16, torch.bfloat16) if full else (torch.bfloat16,)
    skipped = _unavailable(providers, device)
    plan = Plan([p for p in providers if p not in skipped], skipped, device, quick, full,
                head_dims or HEAD_DIMS, seqlens, dtypes or default_dtypes)
    plan.materializing_everywhere = materializing_everywhere or full or device == "cpu"
    if device == "cpu":
        plan.tokens, plan.hidden = CPU_SIZES["tokens"], CPU_SIZES["hidden"]
        plan.head_dims = head_dims or CPU_SIZES["head_dims"]
        plan.seqlens = seqlens or CPU_SIZES["seqlens"]
    elif quick and FLEX in plan.providers:
        plan.providers.remove(FLEX)
        plan.skipped[FLEX] = "left out by --quick (it compiles per shape)"
        print(f"SKIP provider {FLEX}: {plan.skipped[FLEX]}", flush=True)
    else:
        _flex(plan)
    if quick and device == "cuda" and not head_dims:
        plan.head_dims = HEAD_DIMS[:1]
    return plan


def _known() -> list[str]:
    from flashduo.bench.providers import PROVIDERS

    return list(dict.fromkeys([*PROVIDERS, *registered_backends()]))


def _sections(rows: list, targets: list[str]) -> list[tuple[str, str, str]]:
    """(title, table, plot file prefix) per suite that has rows."""
    tags = {r.tag for r in rows}
    out = []
    if "sweep" in tags:
        out.append(("Sweep: TFLOPS vs N", report.format_sweep_table(rows, targets), "sweep_"))
    if "vit" in tags:
        out.append(("ViT shapes", report.format_vit_table(rows, targets), "vit"))
    if "vit-rope" in tags:
        out.append(("ViT shapes with 2D RoPE", report.format_vit_rope_table(rows, targets),
                    "vit-rope"))
    if "scaling" in tags:
        out.append(("Scaling", report.format_scaling_table(rows, targets), "scaling"))
    if "tiles" in tags:
        out.append(("Tiles", report.format_tiles_table(rows), "tiles"))
    return out


def run_benchmark(
    providers: Sequence[str],
    suites: Sequence[str] = SUITE_NAMES,
    quick: bool = False,
    full: bool = False,
    out_dir: str | None = None,
    head_dims: Sequence[int] | None = None,
    seqlens: Sequence[int] | None = None,
    dtypes: Sequence[torch.dtype] | None = None,
    device: str | None = None,
    materializing_everywhere: bool = False,
) -> int:
    """Run ``suites`` over ``providers``; print tables and summary; write the output files.

    Returns 0 when no cell of a fused flashduo backend failed (ERR) and every SDPA check passed,
    1 otherwise (missing a speed target or running out of memory is a measurement, not a
    failure). Raises ``ValueError`` for an unknown provider or suite name.
    ``materializing_everywhere``: time the providers that materialize N x N scores
    (triton-unfused, torch-math, naive) at every sweep and ViT shape; otherwise a GPU run times
    them in the scaling suite and at the reference ViT shape only (``full`` sets it too; the CLI
    sets it when providers are named).
    """
    bad = [s for s in suites if s not in SUITE_NAMES]
    if bad:
        raise ValueError(f"unknown suite(s) {', '.join(bad)}; known: {', '.join(SUITE_NAMES)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.time()
    if quick:
        timing.BUDGET.update(warmup=timing.QUICK_WARMUP_MS, rep=timing.QUICK_REP_MS)
    elif full:
        timing.BUDGET.update(warmup=timing.FULL_WARMUP_MS, rep=timing.FULL_REP_MS)
    else:
        timing.BUDGET.update(warmup=timing.WARMUP_MS, rep=timing.REP_MS)
    if quick and device == "cuda" and "FLASHDUO_AUTOTUNE" not in os.environ:
        os.environ["FLASHDUO_AUTOTUNE"] = "0"  # one Triton config per shape class: no tuning time
    env = environment()
    print(header_line(env), flush=True)
    plan = make_plan(providers, device, quick, full, head_dims, seqlens, dtypes,
                     materializing_everywhere)
    targets = report.target_backends(plan.providers, [p for p in plan.providers if is_flashduo(p)])
    total = sum(SUITES[s][1](plan) for s in suites if s in SUITES)
    total += tiles_count(quick) if "tiles" in suites else 0
    ctx = Context(device, env, Progress(total))
    aborted = None
    suite_s: dict[str, float] = {}
    try:
        for name in suites:
            start = time.time()
            if name == "tiles":
                tiles_why = run_tiles(quick, ctx, unavailable_reason("triton", device) is None)
                if tiles_why:
                    ctx.progress.write(f"SKIP suite tiles: {tiles_why}")
            else:
                SUITES[name][0](plan, ctx)
            suite_s[name] = time.time() - start
    except CudaContextLost as exc:
        aborted = f"ABORTED, the CUDA context is lost after {exc}; the tables hold what ran before"
    finally:
        ctx.progress.close()
    return _finish(ctx, plan, targets, env, out_dir, aborted, t0, suite_s)


def _finish(ctx: Context, plan: Plan, targets: list[str], env: dict, out_dir: str | None,
            aborted: str | None, t0: float, suite_s: dict[str, float]) -> int:
    rows = ctx.rows
    out_dir = out_dir or files.default_out_dir(str(env["gpu"]))
    plot_paths, no_plots = plots.write_plots(rows, out_dir)
    how = (f"triton.testing.do_bench median (warm-up {timing.BUDGET['warmup']} ms, rep "
           f"{timing.BUDGET['rep']} ms), L2 cleared before each call and small inputs rotated"
           if plan.device == "cuda" else
           "CPU wall-clock medians at tiny sizes: illustrative only, timings need a GPU")
    head = "\n".join([header_line(env), "", f"{FLOP_NOTE}. Timing: {how}. Speed ratios > 1 "
                      "mean the flashduo backend is faster."])
    sections = [(title, table, [p for p in plot_paths
                                if p.rsplit("/", 1)[-1].startswith(prefix)])
                for title, table, prefix in _sections(rows, targets)]
    summary = report.summary_lines(rows, targets, ctx.checks)
    summary += [f"{name} not run: {why}" for name, why in plan.skipped.items()]
    if aborted:
        summary.insert(0, aborted)
    if no_plots:
        summary.append(no_plots)
    if ctx.spent:
        ranked = sorted(ctx.spent.items(), key=lambda kv: -kv[1])
        summary.append("time by provider (checks and timed cells, first-call compilation and "
                       "autotuning included): " + ", ".join(f"{k} {v:.3g} s" for k, v in ranked))
    tail = "\n".join(["## Summary", "", *(f"- {line}" for line in summary),
                      f"- wall time {time.time() - t0:.0f} s ("
                      + ", ".join(f"{k} {v:.0f} s" for k, v in suite_s.items()) + ")"])
    text = files.report_markdown(sections, head, tail)
    print()
    print(text, flush=True)
    written = files.write_all(out_dir, rows, ctx.checks, env, text)
    print(f"wrote {', '.join(written + plot_paths)}", flush=True)
    failed = [r for r in rows if r.impl in targets and r.status == ERR and r.tag != "tiles"]
    wrong = [c for c in ctx.checks if c.impl in targets and not c.ok]
    return 1 if aborted or failed or wrong else 0

