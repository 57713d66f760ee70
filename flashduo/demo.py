"""CPU correctness demo of the Triton kernels, run in Triton's interpreter (no GPU needed).

A handful of tiny cases go through ``flashduo.attention_with_lse(..., backend="triton")``, forward
and backward, and are compared with the float64 reference by the test suite's pass rule
(``reference.passrule``). fp32 and fp16 only: the interpreter computes bf16 dots wrongly.
``TRITON_INTERPRET=1`` must be set before the Triton kernels are first used (their configs are
chosen at import); ``run_demo`` sets it and refuses to run when they were already imported for
the GPU."""

from __future__ import annotations

import os
import re
import sys
import time

import torch

from reference.passrule import KINDS, NAMES, Case, case_inputs, max_err, tolerance, truth_and_baseline


def demo_cases() -> list[Case]:
    """The demo's cases: N in {17, 64, 113} x D in {32, 64} x causal, fp32 and fp16, plus GQA,
    Nq != Nk and a packed-qkv view."""
    cases = [
        Case(b, 2, 2, n, n, d, dtype, causal)
        for dtype in (torch.float32, torch.float16)
        for n, d, b in ((17, 32, 2), (64, 64, 1), (113, 64, 1), (113, 32, 2))
        for causal in (False, True)
    ]
    return cases + [
        Case(1, 4, 2, 64, 64, 32, torch.float16, True),  # GQA 4:2
        Case(1, 4, 2, 113, 113, 64, torch.float32, False),  # GQA 4:2
        Case(1, 2, 2, 113, 64, 32, torch.float32, True),  # Nq > Nk
        Case(2, 2, 2, 17, 64, 32, torch.float16, False),  # Nq < Nk
        Case(2, 2, 2, 64, 64, 64, torch.float16, True, layout="packed"),
    ]


def run_case(case: Case, seed: int) -> dict[str, tuple[float, float]]:
    """The Triton backend on ``case`` against the float64 reference, by the tests' pass rule:
    {name: (max abs error, tolerance)} for out, lse, dq, dk, dv."""
    import flashduo

    q, k, v, dout = case_inputs(case, seed)
    out, lse = flashduo.attention_with_lse(q, k, v, causal=case.causal, backend="triton")
    got = (out, lse, *torch.autograd.grad(out, (q, k, v), dout))
    truth, baseline = truth_and_baseline(q, k, v, case.causal, dout)
    return {name: (max_err(x, t), tolerance(kind, max_err(b, t), case.dtype))
            for name, kind, x, t, b in zip(NAMES, KINDS, got, truth, baseline, strict=True)}


def _ensure_interpreter() -> None:
    """Switch Triton to its CPU interpreter; fail if the GPU kernels are already imported."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        kernels = ("triton_impl._common", "triton_impl._config")  # every kernel module's imports
        if any(m in sys.modules for m in kernels):
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
    print("Triton kernels in the CPU interpreter vs the float64 reference: max abs error / "
          "tolerance (2x PyTorch's own error in the input dtype, plus a small floor)")
    t0 = time.time()
    failures = 0
    for i, case in enumerate(cases):
        try:
            errs = run_case(case, seed=i)
        except Exception as exc:  # a crash is one failed case, not the end of the demo
            failures += 1
            print(f"FAIL  {case.id:<40} {type(exc).__name__}: {exc}", flush=True)
            continue
        ok = all(err <= tol for err, tol in errs.values())  # an infinite (NaN) error fails
        failures += not ok
        cols = "  ".join(f"{k} {e:.1e}/{t:.1e}" for k, (e, t) in errs.items())
        print(f"{'PASS' if ok else 'FAIL'}  {case.id:<40} {cols}", flush=True)
    verdict = "all passed" if not failures else f"{failures} FAILED"
    print(f"{len(cases)} cases, {verdict} ({time.time() - t0:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_demo())
