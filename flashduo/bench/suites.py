"""The benchmark's suites and their shapes: sweep, vit, scaling (``tiles`` is in ``tiles.py``).

- sweep: FlashAttention's TFLOPS-vs-N sweep, B·N = 16384 tokens, H·D = 2048, fwd / bwd / fwd+bwd,
  causal and not, D in {64, 128}; bf16 by default, fp16 and bf16 with ``full``.
- vit: ViT shapes N = 197, 257, 577 (CLS + 14², 16², 24² patches), D = 64, ViT-S/B/L head counts
  (6 / 12 / 16), B = 256, bf16, ms per call; then with 2D RoPE at N = 197 (every shape with
  ``full``). On the CPU: B = 2, and ViT-S at N = 197 only unless ``full``.
- scaling: B = 1, H = 16, D = 64, bf16, N doubling from 1024: time and peak memory of one call;
  once a provider runs out of memory its larger sizes are marked OOM without running.

Every suite takes a ``Plan`` (what to run) and a ``Context`` (where results go). FlexAttention
compiles per shape, so it runs only at ``FLEX_SEQLENS`` of the sweep and the reference ViT shape
unless ``full``; the providers that materialize N x N scores (slow, and their story is memory) run
in the scaling suite and at the reference ViT shape unless ``full`` or named in ``--providers``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

import reference
from flashduo.bench.cells import Context, Entry, Shape, run_shape
from flashduo.bench.providers import ROPE_PREFIX, FlexFactory, is_flashduo, make_impl, rope_impls
from flashduo.bench.records import FLEX, MATERIALIZING, MODES, OOM, SWEEP_MODES

TOKENS, HIDDEN = 16384, 2048  # B * N and H * D of the sweep
SEQLENS = (512, 1024, 2048, 4096, 8192, 16384)
QUICK_SEQLENS = (1024, 4096)
FLEX_SEQLENS = (1024, 16384)  # the ends of the sweep: each length is a compile (see perf-notes)
HEAD_DIMS = (64, 128)
VIT_MODELS = {"ViT-S": 6, "ViT-B": 12, "ViT-L": 16}
VIT_SEQLENS = (197, 257, 577)
VIT_BATCH, VIT_D = 256, 64
VIT_REF = ("ViT-S", 197)  # the ViT shape every provider runs at (the RoPE rows too)
SCALING_SEQLENS = tuple(1024 * 2**i for i in range(7))  # up to 65536
QUICK_SCALING_SEQLENS = (1024, 2048, 4096)
CPU_SCALING_SEQLENS = (64, 128, 256)
SCALING_SHAPE = {"B": 1, "H": 16, "D": 64}
SCALING_EXCLUDED = (FLEX,)  # a compile per length, for a curve the sweep already shows


@dataclass
class Plan:
    """What a run measures: the providers that can run here (``skipped``: the others and why),
    sizes, dtypes."""

    providers: list[str]
    skipped: dict[str, str]
    device: str = "cuda"
    quick: bool = False
    full: bool = False
    head_dims: Sequence[int] = HEAD_DIMS
    seqlens: Sequence[int] | None = None
    dtypes: Sequence[torch.dtype] = (torch.float16,)
    flex: FlexFactory | None = None
    tokens: int = TOKENS
    hidden: int = HIDDEN
    materializing_everywhere: bool = False  # else MATERIALIZING providers skip some shapes

    def checked(self) -> list[str]:
        """flashduo backends to compare with SDPA before timing (GPU only: the check's SDPA
        reference is the GPU's)."""
        if self.device != "cuda":
            return []
        return [p for p in self.providers if is_flashduo(p)]

    def impls(self, causal: bool, n: int, flex_here: bool, materializing_here: bool = True
              ) -> dict[str, Entry]:
        """Each provider's callable, or why it does not run."""
        out: dict[str, Entry] = {}
        for name in self.providers:
            if name == FLEX and not flex_here:
                out[name] = "not at this shape (compiles per shape; --full runs it everywhere)"
            elif name in MATERIALIZING and not (materializing_here or self.materializing_everywhere):
                out[name] = ("not at this shape by default (materializes N x N; the scaling "
                             "suite shows it; --full or naming it in --providers runs it)")
            else:
                out[name] = make_impl(name, causal, n, self.flex, self.device)
        return out


def sweep_shape(n: int, d: int, tokens: int = TOKENS, hidden: int = HIDDEN) -> tuple[int, int]:
    """(B, H) of the sweep at sequence length n and head dim d: B·N = tokens, H·D = hidden."""
    return max(tokens // n, 1), max(hidden // d, 1)


def sweep_count(plan: Plan) -> int:
    """Number of cells ``run_sweep`` adds."""
    seqlens = plan.seqlens or (QUICK_SEQLENS if plan.quick else SEQLENS)
    return len(plan.dtypes) * len(plan.head_dims) * 2 * len(seqlens) * len(plan.providers) * 3


def run_sweep(plan: Plan, ctx: Context) -> None:
    """TFLOPS vs N for every dtype, head dim, causal, mode (tag "sweep")."""
    seqlens = plan.seqlens or (QUICK_SEQLENS if plan.quick else SEQLENS)
    for dtype in plan.dtypes:
        for d in plan.head_dims:
            for causal in (False, True):
                for n in seqlens:
                    b, h = sweep_shape(n, d, plan.tokens, plan.hidden)
                    shape = Shape("sweep", b, h, n, d, causal, dtype, SWEEP_MODES)
                    flex_here = plan.full or n in FLEX_SEQLENS
                    impls = plan.impls(causal, n, flex_here, materializing_here=False)
                    run_shape(shape, impls, ctx, plan.checked())


def vit_shapes(plan: Plan) -> list[tuple[str, int, int]]:
    """(model, heads, N) of the ViT suite; only the reference shape when quick, and on the CPU
    unless full (its tiny-batch timings say little more at the other shapes)."""
    if plan.quick or (plan.device == "cpu" and not plan.full):
        return [(VIT_REF[0], VIT_MODELS[VIT_REF[0]], VIT_REF[1])]
    return [(m, h, n) for m, h in VIT_MODELS.items() for n in VIT_SEQLENS]


def vit_count(plan: Plan) -> int:
    """Number of cells ``run_vit`` adds (as many as ``rope_impls`` gives per RoPE shape)."""
    shapes = vit_shapes(plan)
    rope_shapes = [s for s in shapes if plan.device == "cuda" and (plan.full or s[2] == VIT_REF[1])]
    sdpa = [p for p in ("torch-flash", "torch-cudnn") if p in plan.providers]
    rope = (sum(1 for p in plan.providers if is_flashduo(p)) + 2 * len(sdpa)
            + ("torch-cudnn" in sdpa))
    return len(MODES) * (len(shapes) * len(plan.providers) + len(rope_shapes) * rope)


def run_vit(plan: Plan, ctx: Context) -> None:
    """ms per call at ViT shapes (tag "vit"), then with 2D RoPE (tag "vit-rope"), bf16.

    Unless ``full``: the materializing providers and FlexAttention run at the reference shape
    only, and the RoPE rows at N = 197 only (each length compiles the PyTorch rotation anew)."""
    batch = 2 if plan.device == "cpu" else VIT_BATCH
    for model, h, n in vit_shapes(plan):
        ref = (model, n) == VIT_REF
        shape = Shape("vit", batch, h, n, VIT_D, False, torch.bfloat16, MODES)
        run_shape(shape, plan.impls(False, n, plan.full or ref, materializing_here=ref), ctx,
                  plan.checked())
        if plan.device != "cuda" or not (plan.full or n == VIT_REF[1]):
            continue
        grid = math.isqrt(n - ROPE_PREFIX)
        table = reference.CosSinTable(100.0, grid, VIT_D, device=plan.device)
        impls: dict[str, Entry] = dict(rope_impls(plan.providers, table))
        run_shape(Shape("vit-rope", batch, h, n, VIT_D, False, torch.bfloat16, MODES), impls, ctx)


def scaling_seqlens(plan: Plan) -> tuple[int, ...]:
    """The scaling suite's lengths: tiny on the CPU, fewer when quick."""
    if plan.device == "cpu":
        return CPU_SCALING_SEQLENS[:2] if plan.quick else CPU_SCALING_SEQLENS
    return QUICK_SCALING_SEQLENS if plan.quick else SCALING_SEQLENS


def scaling_count(plan: Plan) -> int:
    """Number of cells ``run_scaling`` adds."""
    providers = [p for p in plan.providers if p not in SCALING_EXCLUDED]
    return len(scaling_seqlens(plan)) * len(providers) * len(MODES)


def run_scaling(plan: Plan, ctx: Context) -> None:
    """Time and peak memory vs N (tag "scaling"); after an OOM, larger N are marked, not run."""
    s = SCALING_SHAPE
    providers = [p for p in plan.providers if p not in SCALING_EXCLUDED]
    out_of_memory: dict[tuple[str, str], int] = {}
    for n in scaling_seqlens(plan):
        impls = plan.impls(False, n, False)
        for name in providers:
            modes = tuple(m for m in MODES if (name, m) not in out_of_memory)
            shape = Shape("scaling", s["B"], s["H"], n, s["D"], False, torch.bfloat16, modes)
            for mode in MODES:
                if mode not in modes:
                    ctx.rows.append(shape.row(name, mode, ctx, status=OOM, note="not run: out "
                                              f"of memory at N={out_of_memory[(name, mode)]}"))
                    ctx.progress.advance()
            if modes:
                for row in run_shape(shape, {name: impls[name]}, ctx, memory=True):
                    if row.status == OOM:
                        out_of_memory[(name, row.mode)] = n


Suite = Callable[[Plan, Context], None]
SUITES: dict[str, tuple[Suite, Callable[[Plan], int]]] = {
    "sweep": (run_sweep, sweep_count),
    "vit": (run_vit, vit_count),
    "scaling": (run_scaling, scaling_count),
}
