"""``run_benchmark``: pick the providers that can run, run the chosen suites with one progress bar,
print the report (the suites' tables, the facts summary, the summary) and write it with CSV, JSON
and PNG plots.

On a GPU the suites run at their real sizes. On the CPU (``device="cpu"``) they run at tiny sizes
(``CPU_SIZES``) with the PyTorch providers only, timed in ms, so the outputs can be produced and
checked anywhere; those timings are illustrative, the ones to quote need a GPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import torch

from flashduo.bench import files, plots, report, summary
from flashduo.bench.cells import Context
from flashduo.bench.masks import masks_count, run_masks
from flashduo.bench.progress import Progress
from flashduo.bench.providers import (
    PROVIDERS,
    FlexFactory,
    is_flashduo,
    unavailable_reason,
    unknown_providers,
)
from flashduo.bench.records import ERR, FLEX, FLOP_NOTE, environment, header_line, sweep_unit
from flashduo.bench.suites import HEAD_DIMS, SUITES, Plan
from flashduo.bench.tiles import run_tiles, tiles_count
from flashduo.bench.timing import (
    CPU_MAX_REPS,
    CPU_MIN_REPS,
    MAX_ROTATION,
    Budget,
    CudaContextLost,
    budget_for,
    short,
)
from flashduo.registry import registered_backends

SUITE_NAMES = ("sweep", "vit", "scaling", "tiles")  # the default run
OPTIONAL_SUITES = ("masks",)  # run only when named
KNOWN_SUITES = SUITE_NAMES + OPTIONAL_SUITES
RUNNERS = {**SUITES, "masks": (run_masks, masks_count)}
CPU_SIZES = {"tokens": 512, "hidden": 256, "head_dims": (64,), "seqlens": (64, 128)}


def check_names(providers: Sequence[str], suites: Sequence[str]) -> None:
    """Raise ``ValueError`` naming any unknown provider or suite, and the known ones."""
    unknown = unknown_providers(providers)
    if unknown:
        known = dict.fromkeys([*PROVIDERS, *registered_backends()])
        raise ValueError(f"unknown provider(s) {', '.join(unknown)}; known: {', '.join(known)}")
    bad = [s for s in suites if s not in KNOWN_SUITES]
    if bad:
        raise ValueError(f"unknown suite(s) {', '.join(bad)}; known: {', '.join(KNOWN_SUITES)}")


def _unavailable(providers: Sequence[str], device: str) -> dict[str, str]:
    """Provider -> why it cannot run here, for those that cannot (one line per reason)."""
    skipped = {name: why for name in providers if (why := unavailable_reason(name, device))}
    for why, names in _by_reason(skipped).items():
        print(f"SKIP provider(s) {', '.join(names)}: {why}", flush=True)
    return skipped


def _by_reason(skipped: dict[str, str]) -> dict[str, list[str]]:
    """reason -> the providers skipped for it."""
    out: dict[str, list[str]] = {}
    for name, why in skipped.items():
        out.setdefault(why, []).append(name)
    return out


def _leave_out(plan: Plan, name: str, why: str) -> None:
    """Drop provider ``name`` from the plan, with the reason (printed)."""
    plan.providers.remove(name)
    plan.skipped[name] = why
    print(f"SKIP provider(s) {name}: {why}", flush=True)


def make_plan(providers: Sequence[str], device: str, quick: bool, full: bool,
              head_dims: Sequence[int] | None, seqlens: Sequence[int] | None,
              dtypes: Sequence[torch.dtype] | None, materializing_everywhere: bool = False) -> Plan:
    """What the run measures (the names are known: ``check_names``)."""
    default_dtypes = (torch.float16, torch.bfloat16) if full else (torch.bfloat16,)
    skipped = _unavailable(providers, device)
    plan = Plan([p for p in providers if p not in skipped], skipped, device, quick, full,
                head_dims or HEAD_DIMS, seqlens, dtypes or default_dtypes)
    plan.materializing_everywhere = materializing_everywhere or full or device == "cpu"
    if device == "cpu":
        plan.tokens, plan.hidden = CPU_SIZES["tokens"], CPU_SIZES["hidden"]
        plan.head_dims = head_dims or CPU_SIZES["head_dims"]
        plan.seqlens = seqlens or CPU_SIZES["seqlens"]
    elif FLEX in plan.providers and quick:
        _leave_out(plan, FLEX, "left out by --quick (it compiles per shape)")
    elif FLEX in plan.providers:
        try:
            plan.flex = FlexFactory()
        except Exception as exc:
            _leave_out(plan, FLEX, short(exc))
    if quick and device == "cuda" and not head_dims:
        plan.head_dims = HEAD_DIMS[:1]
    return plan


def _sections(rows: list, backends: list[str]) -> list[tuple[str, str, str | None]]:
    """(title, table, plot file prefix or None) per suite that has rows."""
    tags = {r.tag for r in rows}
    unit = report.UNITS[sweep_unit(r for r in rows if r.tag == "sweep")]
    every = [
        ("sweep", f"Sweep: {unit} vs N", lambda: report.format_sweep_table(rows, backends),
         "sweep_"),
        ("sweep", "Sweep: host-bound cells",
         lambda: report.format_host_bound_table(rows, backends), None),
        ("vit", "ViT shapes", lambda: report.format_vit_table(rows, backends), None),
        ("vit", "ViT shapes: host time", lambda: report.format_vit_host_table(rows, backends),
         None),
        ("vit-rope", "ViT shapes with 2D RoPE",
         lambda: report.format_vit_rope_table(rows, backends), None),
        ("scaling", "Scaling", lambda: report.format_scaling_table(rows, backends), "scaling"),
        ("tiles", "Tiles", lambda: report.format_tiles_table(rows), "tiles"),
    ]
    if any(t.startswith("masks-") for t in tags):
        every.append((next(t for t in tags if t.startswith("masks-")), "Masks and packed sequences",
                      lambda: report.format_masks_table(rows, backends), None))
    out = [(title, table(), prefix) for tag, title, table, prefix in every if tag in tags]
    if any(r.config and r.tag != "tiles" for r in rows):
        out.append(("Tuned tiles", report.format_tuned_tiles_table(rows), None))
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
    budget: Budget | None = None,
    notes: Sequence[tuple[str, str]] = (),
) -> int:
    """Run ``suites`` over ``providers``; print the report; write the output files.

    Returns 0 when no cell of a flashduo backend failed (ERR) and every SDPA check passed, 1
    otherwise (running out of memory is a measurement, not a failure). Raises ``ValueError`` for
    an unknown provider or suite name.
    ``materializing_everywhere``: time the providers that materialize N x N scores
    (triton-unfused, torch-math, naive) at every sweep and ViT shape; otherwise a GPU run times
    them in the scaling suite and at the reference ViT shape only (``full`` sets it too; the CLI
    sets it when providers are named). ``budget``: warm-up and timed ms of every cell (default:
    ``timing.budget_for(quick, full)``). ``notes``: (title, preformatted text) sections put in
    the report before the suites' (the CLI's CPU correctness demo).
    """
    check_names(providers, suites)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    budget = budget or budget_for(quick, full)
    t0 = time.time()
    if quick and device == "cuda" and "FLASHDUO_AUTOTUNE" not in os.environ:
        os.environ["FLASHDUO_AUTOTUNE"] = "0"  # one Triton config per shape class: no tuning time
    env = environment()
    print(header_line(env), flush=True)
    plan = make_plan(providers, device, quick, full, head_dims, seqlens, dtypes,
                     materializing_everywhere)
    total = sum(RUNNERS[s][1](plan) for s in suites if s in RUNNERS)
    total += tiles_count(quick) if "tiles" in suites else 0
    ctx = Context(device, env, Progress(total), budget)
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
                RUNNERS[name][0](plan, ctx)
            suite_s[name] = time.time() - start
    except CudaContextLost as exc:
        aborted = f"ABORTED, the CUDA context is lost after {exc}; the tables hold what ran before"
    finally:
        ctx.progress.close()
    return _finish(ctx, plan, out_dir, aborted, t0, suite_s, notes)


def _timing_note(device: str, budget: Budget) -> str:
    """How the cells were timed, for the report's head."""
    if device == "cuda":
        return (f"median of triton.testing.do_bench ({budget.describe()}), L2 cleared before "
                f"each call, inputs smaller than twice the L2 cycled over up to {MAX_ROTATION} "
                "copies")
    return (f"median of {CPU_MIN_REPS} to {CPU_MAX_REPS} wall-clock calls after warm-up "
            f"({budget.describe()}) at tiny sizes on the CPU: illustrative only, timings that "
            "mean something need a GPU")


def _finish(ctx: Context, plan: Plan, out_dir: str | None, aborted: str | None, t0: float,
            suite_s: dict[str, float], notes: Sequence[tuple[str, str]]) -> int:
    rows = ctx.rows
    backends = [p for p in plan.providers if is_flashduo(p)]
    out_dir = out_dir or files.default_out_dir(str(ctx.env["gpu"]))
    plot_paths, no_plots = plots.write_plots(rows, out_dir)
    head = "\n".join([header_line(ctx.env), "", f"{FLOP_NOTE}; TFLOPS = FLOPs / time. Timing: "
                      f"{_timing_note(plan.device, ctx.budget)}. Speed ratios (baseline ms / "
                      "backend ms) > 1 mean the flashduo backend is faster."])
    sections = [(title, f"```\n{text.rstrip()}\n```", []) for title, text in notes]
    sections += [(title, table, [p for p in plot_paths if prefix
                                 and os.path.basename(p).startswith(prefix)])
                 for title, table, prefix in _sections(rows, backends)]
    sections.append(("Facts summary", summary.facts_section(rows, backends), []))
    lines = summary.summary_lines(rows, backends, ctx.checks)
    lines += [f"not run: {', '.join(names)}: {why}" for why, names in _by_reason(plan.skipped).items()]
    if aborted:
        lines.insert(0, aborted)
    if no_plots:
        lines.append(no_plots)
    if ctx.spent:
        ranked = sorted(ctx.spent.items(), key=lambda kv: -kv[1])
        lines.append("time by provider (checks and timed cells, first-call compilation and "
                     "autotuning included): " + ", ".join(f"{k} {v:.3g} s" for k, v in ranked))
    tail = "\n".join(["## Summary", "", *(f"- {line}" for line in lines),
                      f"- wall time {time.time() - t0:.0f} s ("
                      + ", ".join(f"{k} {v:.0f} s" for k, v in suite_s.items()) + ")"])
    text = files.report_markdown(sections, head, tail)
    print()
    print(text, flush=True)
    written = files.write_all(out_dir, rows, ctx.checks, ctx.env, text)
    print(f"wrote {', '.join(written + plot_paths)}", flush=True)
    failed = [r for r in rows if r.impl in backends and r.status == ERR and r.tag != "tiles"]
    wrong = [c for c in ctx.checks if c.impl in backends and not c.ok]
    return 1 if aborted or failed or wrong else 0
