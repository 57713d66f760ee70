"""CPU correctness demo of the Triton kernels, run in Triton's interpreter (no GPU needed).

A handful of tiny cases go through ``flashduo.attention_with_lse(..., backend="triton")``, forward
and backward, and are compared with the float64 reference (``reference.attention_ref`` and
``reference.attention_bwd_ref``) by max abs error. fp32 and fp16 only: the interpreter computes
bf16 dots wrongly. ``TRITON_INTERPRET=1`` must be set before ``triton_impl`` is imported (its
kernels and autotune configs are chosen at import); ``run_demo`` sets it and refuses to run when
the kernels were already imported for the GPU.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass

import torch

# max abs error allowed, by dtype: (out, lse, grads)
TOLERANCES = {
    torch.float32: (1e-4, 1e-4, 2e-4),
    torch.float16: (2e-3, 1e-3, 5e-3),
}


@dataclass(frozen=True)
class Case:
    """One demo shape: q (b, hq, nq, d), k and v (b, hkv, nk, d).

    ``packed``: q, k, v are strided views of one (b, n, 3, h, d) projection (needs nq == nk and
    hq == hkv), as a transformer's fused qkv linear produces them.
    """

    b: int
    hq: int
    hkv: int
    nq: int
    nk: int
    d: int
    causal: bool
    dtype: torch.dtype
    packed: bool = False

    def label(self) -> str:
        dt = {torch.float32: "fp32", torch.float16: "fp16"}[self.dtype]
        heads = f"H{self.hq}" if self.hq == self.hkv else f"H{self.hq}:{self.hkv}"
        n = f"N{self.nq}" if self.nq == self.nk else f"Nq{self.nq} Nk{self.nk}"
        tags = " causal" if self.causal else ""
        tags += " packed" if self.packed else ""
        return f"{dt} B{self.b} {heads} {n} D{self.d}{tags}"


def demo_cases() -> list[Case]:
    """The demo's cases: N in {17, 64, 113} x D in {32, 64} x causal, fp32 and fp16, plus GQA,
    Nq != Nk and a packed-qkv view."""
    cases = []
    for dtype in (torch.float32, torch.float16):
        for n, d, b in ((17, 32, 2), (64, 64, 1), (113, 64, 1), (113, 32, 2)):
            for causal in (False, True):
                cases.append(Case(b, 2, 2, n, n, d, causal, dtype))
    cases += [
        Case(1, 4, 2, 64, 64, 32, True, torch.float16),  # GQA 4:2
        Case(1, 4, 2, 113, 113, 64, False, torch.float32),  # GQA 4:2
        Case(1, 2, 2, 113, 64, 32, True, torch.float32),  # Nq > Nk
        Case(2, 2, 2, 17, 64, 32, False, torch.float16),  # Nq < Nk
        Case(2, 2, 2, 64, 64, 64, True, torch.float16, packed=True),
    ]
    return cases


def _inputs(case: Case, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Leaf tensors to differentiate and the q, k, v views of them."""
    c = case
    if c.packed:
        qkv = torch.randn(c.b, c.nq, 3, c.hq, c.d, generator=gen, dtype=c.dtype)
        qkv.requires_grad_()
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D), last stride 1
        return (qkv,), (q, k, v)
    q = torch.randn(c.b, c.hq, c.nq, c.d, generator=gen, dtype=c.dtype).requires_grad_()
    k = torch.randn(c.b, c.hkv, c.nk, c.d, generator=gen, dtype=c.dtype).requires_grad_()
    v = torch.randn(c.b, c.hkv, c.nk, c.d, generator=gen, dtype=c.dtype).requires_grad_()
    return (q, k, v), (q, k, v)


def _max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs error in float64; NaN if x has any NaN (so NaN never passes)."""
    diff = (x.double() - ref.double()).abs()
    return float("nan") if torch.isnan(diff).any() else diff.max().item()


def run_case(case: Case, seed: int) -> dict[str, float]:
    """Errors of the Triton backend vs the float64 reference: out, lse, dq, dk, dv."""
    import flashduo
    import reference

    gen = torch.Generator().manual_seed(seed)
    leaves, (q, k, v) = _inputs(case, gen)
    dout = torch.randn(case.b, case.hq, case.nq, case.d, generator=gen, dtype=case.dtype)
    out, lse = flashduo.attention_with_lse(q, k, v, causal=case.causal, backend="triton")
    out.backward(dout)
    ref_out, ref_lse = reference.attention_ref(q, k, v, case.causal, upcast=True)
    ref_grads = reference.attention_bwd_ref(dout, q, k, v, case.causal)
    errs = {"out": _max_err(out, ref_out), "lse": _max_err(lse, ref_lse)}
    if case.packed:
        grads = leaves[0].grad.permute(2, 0, 3, 1, 4).unbind(0)
    else:
        grads = tuple(t.grad for t in leaves)
    for name, g, r in zip(("dq", "dk", "dv"), grads, ref_grads, strict=True):
        errs[name] = _max_err(g, r)
    return errs


def _passes(case: Case, errs: dict[str, float]) -> bool:
    tol_out, tol_lse, tol_grad = TOLERANCES[case.dtype]
    tols = {"out": tol_out, "lse": tol_lse, "dq": tol_grad, "dk": tol_grad, "dv": tol_grad}
    return all(errs[k] <= tols[k] for k in tols)  # NaN compares False: fails


def _ensure_interpreter() -> None:
    """Switch Triton to its CPU interpreter; fail if the GPU kernels are already imported."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        if any(m == "triton_impl" or m.startswith("triton_impl.") for m in sys.modules):
            raise RuntimeError(
                "triton_impl was imported before TRITON_INTERPRET=1 was set; run the demo in a "
                "fresh process (python -m flashduo demo) or set TRITON_INTERPRET=1 first"
            )
        os.environ["TRITON_INTERPRET"] = "1"


CANNOT_RUN = 2  # run_demo's return code when the interpreter cannot run the kernels here


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:2])


def interpreter_blocker() -> str | None:
    """Why Triton's interpreter cannot run the kernels in this environment, or None.

    Triton 3.6's interpreter turns a loop bound into a Python int with ``int()`` on a one-element
    array, which numpy 2.4 and later refuse; every kernel with a ``range`` loop then fails (seen
    with triton 3.6.0 under numpy 2.4 and 2.5; numpy 2.3 and triton 3.7 work).
    """
    import numpy
    import triton

    if _major_minor(triton.__version__) < (3, 7) and _major_minor(numpy.__version__) >= (2, 4):
        return (f"triton {triton.__version__}'s interpreter cannot run loops under numpy "
                f"{numpy.__version__}; the CPU demo needs triton >= 3.7 or numpy < 2.4")
    return None


def run_demo(cases: list[Case] | None = None) -> int:
    """Run the cases on the CPU in the Triton interpreter, print PASS/FAIL lines.

    Returns 0 if all pass, 1 if any fails, ``CANNOT_RUN`` (with the reason printed) when the
    installed Triton's interpreter cannot run the kernels at all.
    """
    _ensure_interpreter()
    blocker = interpreter_blocker()
    if blocker:
        print(f"CPU demo not run: {blocker}", flush=True)
        return CANNOT_RUN
    cases = demo_cases() if cases is None else cases
    print("Triton kernels in the CPU interpreter vs the float64 reference (max abs error); "
          "tolerances (out, lse, grads): "
          + ", ".join(f"{str(dt).removeprefix('torch.')} {t}" for dt, t in TOLERANCES.items()))
    t0 = time.time()
    failures = 0
    for i, case in enumerate(cases):
        try:
            errs = run_case(case, seed=i)
        except Exception as exc:  # a crash is one failed case, not the end of the demo
            failures += 1
            print(f"FAIL  {case.label():<36} {type(exc).__name__}: {exc}", flush=True)
            continue
        ok = _passes(case, errs)
        failures += not ok
        cols = "  ".join(f"{k} {e:.1e}" for k, e in errs.items())
        print(f"{'PASS' if ok else 'FAIL'}  {case.label():<36} {cols}", flush=True)
    verdict = "all passed" if not failures else f"{failures} FAILED"
    print(f"{len(cases)} cases, {verdict} ({time.time() - t0:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_demo())
