"""What "correct" means for a backend: FlashAttention's pass rule, and the problem description
(``Case``) that the test suite and the CPU demo share.

Pass rule: a backend's max abs error against the float64 reference must be at most ``FACTOR`` x
PyTorch's own error computing the same in the input dtype (plain float32 for float32: the Triton
kernels use 3xTF32 dots there), plus a small per-dtype absolute floor ``FLOOR``. The floor is
about a fifth of one unit in the last place at 1.0 for fp16 (2^-10) and bf16 (2^-7) — it absorbs
a last-bit rounding difference where PyTorch's own error happens to be zero — and 2e-5 for
float32, where the kernels' 3xTF32 dots carry ~1e-6 relative error that PyTorch's plain float32
does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reference.attention import attention_bwd_ref, attention_ref

FACTOR = {"out": 2.0, "lse": 2.0, "grad": 2.0}
FLOOR = {torch.float16: 2e-4, torch.bfloat16: 2e-3, torch.float32: 2e-5}
NAMES = ("out", "lse", "dq", "dk", "dv")
KINDS = ("out", "lse", "grad", "grad", "grad")

Results = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Case:
    """One attention problem: q (b, hq, nq, d), k/v (b, hkv, nk, d).

    ``layout``: ``contiguous``; ``packed`` (q, k, v are views of one (b, n, 3, h, d) projection,
    needs nq == nk and hq == hkv); ``bnhd`` ((b, n, h, d) tensors transposed); ``strided_last``
    (last dim not contiguous: the front door copies it once).
    """

    b: int
    hq: int
    hkv: int
    nq: int
    nk: int
    d: int
    dtype: torch.dtype
    causal: bool
    layout: str = "contiguous"

    @property
    def id(self) -> str:
        dt = str(self.dtype).removeprefix("torch.")
        c = "causal" if self.causal else "full"
        return f"b{self.b}h{self.hq}x{self.hkv}-q{self.nq}k{self.nk}-d{self.d}-{dt}-{c}-{self.layout}"


def make_inputs(case: Case, seed: int = 0, device: str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh standard-normal q, k, v for ``case`` in its layout, requiring grad."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(case.dtype)

    b, hq, hkv, nq, nk, d = case.b, case.hq, case.hkv, case.nq, case.nk, case.d
    if case.layout == "packed":
        qkv = randn(b, nq, 3, hq, d)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    elif case.layout == "bnhd":
        q = randn(b, nq, hq, d).transpose(1, 2)
        k = randn(b, nk, hkv, d).transpose(1, 2)
        v = randn(b, nk, hkv, d).transpose(1, 2)
    elif case.layout == "strided_last":
        q = randn(b, hq, d, nq).transpose(-1, -2)
        k = randn(b, hkv, d, nk).transpose(-1, -2)
        v = randn(b, hkv, d, nk).transpose(-1, -2)
    else:
        q, k, v = randn(b, hq, nq, d), randn(b, hkv, nk, d), randn(b, hkv, nk, d)
    return tuple(t.requires_grad_() for t in (q, k, v))


def case_inputs(case: Case, seed: int = 0, device: str = "cpu"):
    """q, k, v for the case plus a random output gradient dout (B, Hq, Nq, D) (never zeros)."""
    q, k, v = make_inputs(case, seed, device)
    g = torch.Generator(device=device).manual_seed(seed + 1)
    dout = torch.randn(q.shape, generator=g, device=device).to(q.dtype)
    return q, k, v, dout


def truth_and_baseline(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                       dout: torch.Tensor, scale: float | None = None, **masks
                       ) -> tuple[Results, Results]:
    """(float64 truth, PyTorch-in-input-dtype baseline), each as (out, lse, dq, dk, dv);
    ``masks``: the masking keywords of ``attention_ref`` (attn_mask, window, softcap)."""
    out, lse = attention_ref(q, k, v, causal, scale, upcast=True, **masks)
    truth = (out, lse, *attention_bwd_ref(dout, q, k, v, causal, scale, **masks))
    qb, kb, vb = (t.detach().requires_grad_() for t in (q, k, v))
    out_b, lse_b = attention_ref(qb, kb, vb, causal, scale, upcast=False, **masks)
    grads_b = torch.autograd.grad(out_b, (qb, kb, vb), dout)
    return truth, (out_b, lse_b, *grads_b)


def tolerance(kind: str, baseline_err: float, dtype: torch.dtype, factor: float | None = None
              ) -> float:
    """Allowed max abs error: FACTOR[kind] (or ``factor``) x PyTorch's own error + FLOOR[dtype]."""
    return (FACTOR[kind] if factor is None else factor) * baseline_err + FLOOR[dtype]


def max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs difference in float64; equal values (the -inf lse of a row that sees no key) are
    exact; NaN anywhere counts as infinite error."""
    x, ref = x.double(), ref.double()
    diff = torch.where(x == ref, 0.0, (x - ref).abs())
    if diff.numel() == 0:
        return 0.0
    if torch.isnan(diff).any():
        return float("inf")
    return diff.max().item()


def failure(name: str, x: torch.Tensor, ref: torch.Tensor, baseline: torch.Tensor, kind: str,
            dtype: torch.dtype, factor: float | None = None) -> str | None:
    """None when ``x`` passes the rule against ``ref``, else a message with max / mean error and
    where. ``baseline`` is PyTorch's own result in the input ``dtype``; it sets the tolerance.
    ``factor`` replaces FACTOR[kind] for a documented exception."""
    err = max_err(x, ref)
    base = max_err(baseline, ref)
    tol = tolerance(kind, base, dtype, factor)
    if err <= tol:
        return None
    diff = (x.double() - ref.double()).abs().nan_to_num(float("inf"))
    where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    n_nan = int(torch.isnan(x).sum())
    return (f"{name}: max err {err:.3e} > tol {tol:.3e} (PyTorch's own {base:.3e}); "
            f"mean err {diff.clamp(max=1e30).mean().item():.3e}; worst at {where}; NaNs {n_nan}")
