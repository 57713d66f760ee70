"""The masks suite (``--suite masks``; not in the default run): attention with the masking
arguments and packed sequences against what PyTorch offers for the same job, TFLOPS counted on
the (query, key) pairs that take part.

- window: causal sliding window (left 512 or 2048) at N = 16384 and 32768 (B 1, H 16, D 64),
  against FlexAttention with a sliding-window block mask and against the same backend's dense
  causal attention at that N;
- varlen: 32 sequences of random lengths 128 - 4096 packed (``attention_varlen``, H 16, D 64),
  against FlexAttention with a document mask over the packed tokens and SDPA on the padded batch
  with a key-padding mask (its time includes padding the packed tokens and gathering them back,
  as a caller without packed calls pays);
- key-padding: B 32, N 1024, the last quarter of each entry's keys left out (a (B, 1, 1, N) bool
  ``attn_mask``), against SDPA with the same mask;
- softcap: B 4, N 4096, softcap 30, against FlexAttention's ``score_mod``.

bf16, forward and forward+backward. Each flashduo backend whose ``Backend.masks`` (or
``fwd_varlen``) takes the case runs it; on the CPU only the SDPA rows run, at tiny sizes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import flashduo
from flashduo.bench.cells import Context, Entry, Shape, run_shape
from flashduo.bench.providers import is_flashduo, raise_recompile_limit
from flashduo.bench.records import DENSE, FLEX, MODES, SDPA_MASK, SDPA_PADDED
from flashduo.bench.suites import Plan
from flashduo.registry import Backend

WINDOW_CASES = ((16384, 512), (16384, 2048), (32768, 512), (32768, 2048))  # (N, left)
VARLEN_SEQS, VARLEN_LENS = 32, (128, 4096)
HEADS, HEAD_DIM = 16, 64
PAD_B, PAD_N = 32, 1024
CAP_B, CAP_N, CAP = 4, 4096, 30.0
CPU = {"window": ((256, 32),), "varlen": (4, (8, 64)), "pad": (2, 64), "cap": (1, 128)}


def window_pairs(n: int, left: int) -> int:
    """Pairs of a causal window of ``left`` keys back over n queries: row i sees min(i, left) + 1."""
    return n * (left + 1) - left * (left + 1) // 2 if n > left else n * (n + 1) // 2


@dataclass(frozen=True)
class Case:
    """One masks cell: its shape (``pairs`` set) and each provider's callable on the shape's
    (B, H, N, D) q, k, v, or why it does not run."""

    shape: Shape
    impls: dict[str, Entry]


def _backends(plan: Plan, takes: Callable[[Backend], bool]) -> list[str]:
    """The flashduo backends of the plan that ``takes`` the case."""
    return [p for p in plan.providers if is_flashduo(p) and p in flashduo.registered_backends()
            and takes(flashduo.get_backend(p))]


def _flex_impl(plan: Plan, mask_mod: Callable | None, n: int,
               score_mod: Callable | None = None) -> dict[str, Entry]:
    """{FLEX: compiled flex_attention with a block mask of ``mask_mod`` over n x n (built on the
    first call) and ``score_mod``} where the plan has FlexAttention and a GPU, else {}."""
    if FLEX not in plan.providers or plan.device != "cuda":
        return {}
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    raise_recompile_limit()
    flex = torch.compile(flex_attention, dynamic=False)
    built: list = []

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if mask_mod is not None and not built:
            built.append(create_block_mask(mask_mod, None, None, n, n, device=plan.device))
        return flex(q, k, v, block_mask=built[0] if built else None, score_mod=score_mod)

    return {FLEX: fn}


def window_case(plan: Plan, n: int, left: int) -> Case:
    h, d = (HEADS, HEAD_DIM)
    shape = Shape(f"masks-window-{left}", 1, h, n, d, True, torch.bfloat16, MODES,
                  float(h * window_pairs(n, left)))
    impls: dict[str, Entry] = {}
    for be in _backends(plan, lambda b: "window" in b.masks):
        impls[be] = lambda q, k, v, be=be: flashduo.attention(q, k, v, True, backend=be,
                                                              window=(left, 0))
        impls[f"{be}-{DENSE}"] = lambda q, k, v, be=be: flashduo.attention(q, k, v, True,
                                                                           backend=be)

    def band(b, hh, qi, ki):
        return (ki <= qi) & (qi - ki <= left)

    impls.update(_flex_impl(plan, band, n))
    return Case(shape, impls)


def _lengths(count: int, lo: int, hi: int) -> list[int]:
    rng = random.Random(0)
    return [rng.randint(lo, hi) for _ in range(count)]


def varlen_case(plan: Plan, count: int, bounds: tuple[int, int]) -> Case:
    """Packed sequences, passed to every provider as one (1, H, total, D) tensor."""
    lens = _lengths(count, *bounds)
    total, h, d = sum(lens), HEADS, HEAD_DIM
    shape = Shape("masks-varlen", 1, h, total, d, False, torch.bfloat16, MODES,
                  float(h * sum(n * n for n in lens)))
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32,
                      device=plan.device)
    longest = max(lens)
    impls: dict[str, Entry] = {}
    for be in _backends(plan, lambda b: b.fwd_varlen is not None):
        def packed(q, k, v, be=be):
            rows = [t[0].transpose(0, 1) for t in (q, k, v)]  # (total, H, D) views
            out = flashduo.attention_varlen(*rows, cu, cu, longest, longest, backend=be)
            return out.transpose(0, 1)[None]

        impls[be] = packed
    seq = torch.repeat_interleave(torch.arange(count, device=plan.device),
                                  torch.tensor(lens, device=plan.device))

    def same_document(b, hh, qi, ki):
        return seq[qi] == seq[ki]

    impls.update(_flex_impl(plan, same_document, total))
    pos = torch.cat([torch.arange(n, device=plan.device) for n in lens])
    keep = torch.arange(longest, device=plan.device)[None, :] < cu.diff()[:, None]

    def padded(q, k, v):
        """SDPA on the padded batch: (count, H, longest, D) with a key-padding mask; the valid
        rows gathered back into (1, H, total, D)."""
        outs = []
        for t in (q, k, v):
            pad = t.new_zeros(count, h, longest, d)
            pad[seq, :, pos] = t[0].transpose(0, 1)  # differentiable: gradients reach t
            outs.append(pad)
        out = F.scaled_dot_product_attention(*outs, attn_mask=keep[:, None, None, :])
        return out[seq, :, pos].transpose(0, 1)[None]

    impls[SDPA_PADDED] = padded
    return Case(shape, impls)


def padding_case(plan: Plan, b: int, n: int) -> Case:
    h, d = HEADS, HEAD_DIM
    keep = torch.ones(b, 1, 1, n, dtype=torch.bool, device=plan.device)
    keep[..., n - n // 4:] = False
    shape = Shape("masks-key-padding", b, h, n, d, False, torch.bfloat16, MODES,
                  float(b * h * n * (n - n // 4)))
    impls: dict[str, Entry] = {
        be: lambda q, k, v, be=be: flashduo.attention(q, k, v, backend=be, attn_mask=keep)
        for be in _backends(plan, lambda x: "attn_mask" in x.masks)}
    impls[SDPA_MASK] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    return Case(shape, impls)


def softcap_case(plan: Plan, b: int, n: int) -> Case:
    h, d = HEADS, HEAD_DIM
    shape = Shape("masks-softcap", b, h, n, d, False, torch.bfloat16, MODES,
                  float(b * h * n * n))
    impls: dict[str, Entry] = {
        be: lambda q, k, v, be=be: flashduo.attention(q, k, v, backend=be, softcap=CAP)
        for be in _backends(plan, lambda x: "softcap" in x.masks)}

    def capped(score, bb, hh, qi, ki):
        return CAP * torch.tanh(score / CAP)

    impls.update(_flex_impl(plan, None, n, capped))
    return Case(shape, impls)


def cases(plan: Plan) -> list[Case]:
    """The suite's cells (block masks and compiles wait for a provider's first call). On the CPU:
    tiny sizes, the SDPA rows only (timings of the rest need a GPU)."""
    if plan.device != "cuda":
        (n, left), = CPU["window"]
        built = [window_case(plan, n, left), varlen_case(plan, *CPU["varlen"]),
                 padding_case(plan, *CPU["pad"]), softcap_case(plan, *CPU["cap"])]
        return [Case(c.shape, {k: v for k, v in c.impls.items() if k in (SDPA_MASK, SDPA_PADDED)})
                for c in built]
    return [*(window_case(plan, n, left) for n, left in WINDOW_CASES),
            varlen_case(plan, VARLEN_SEQS, VARLEN_LENS), padding_case(plan, PAD_B, PAD_N),
            softcap_case(plan, CAP_B, CAP_N)]


def masks_count(plan: Plan) -> int:
    """Number of cells ``run_masks`` adds."""
    return sum(len(c.impls) for c in cases(plan)) * len(MODES)


def run_masks(plan: Plan, ctx: Context) -> None:
    """Every masks cell (tags "masks-..."), each provider in each mode."""
    for case in cases(plan):
        run_shape(case.shape, case.impls, ctx)
