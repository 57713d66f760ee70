"""torch.compile's view of what each recorded Triton launch writes.

Inside ``torch.compile`` the kernels are recorded through ``torch.library.wrap_triton``
(``triton_impl._traced``), and torch decides from each kernel's TTIR which tensor arguments it
writes: those are cloned and replace the argument afterwards. An argument wrongly counted as
written that is the same tensor as a real output (a placeholder passed for an unused pointer)
replaces that output with a stale clone. So every recorded launch of a dense forward and backward
must be seen writing exactly its outputs.

The analysis needs the kernels' TTIR, which the Triton interpreter the CPU test session runs
under does not make: the check runs in a subprocess without it, against an sm_90 target (no GPU
is needed to make TTIR).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# (kernel, causal) -> the arguments it writes
EXPECTED = {
    ("_fwd_kernel", False): ["Lse", "Out"],
    ("_preprocess_kernel", False): ["Delta"],
    ("_bwd_kernel", False): ["DK", "DQ", "DV"],
    ("_fwd_kernel", True): ["Lse", "Out"],
    ("_dq_kernel", True): ["DQ", "Delta"],
    ("_dkdv_kernel", True): ["DK", "DV"],
}
SKIP = 3  # the probe's exit status where this torch / triton lacks what it needs


def _probe() -> None:
    """Record a dense forward and backward on CPU tensors and print each launch's writes as
    JSON lines; exit ``SKIP`` where torch's analysis or Triton's driver API differ."""
    try:
        import torch
        import triton
        from torch._higher_order_ops import triton_kernel_wrap as wrap
        from triton.backends.compiler import GPUTarget

        if not hasattr(triton.runtime.driver, "set_active"):
            sys.exit(SKIP)
        if hasattr(wrap, "identify_accessed_tensors"):  # torch >= 2.12

            def writes_of(fn, kwargs):
                accessed = wrap.identify_accessed_tensors(fn, kwargs, {})
                return sorted(dep.name for dep in accessed.read_writes.writes)

        elif hasattr(wrap, "identify_mutated_tensors"):

            def writes_of(fn, kwargs):
                return sorted(wrap.identify_mutated_tensors(fn, kwargs, {}))

        else:
            sys.exit(SKIP)
    except ImportError:
        sys.exit(SKIP)
    sys.path.insert(0, str(ROOT))

    class Target:  # just enough of a driver to make TTIR for sm_90
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_current_device(self):
            return 0

        def is_active(self):
            return True

    triton.runtime.driver.set_active(Target())
    from triton_impl import _traced, bwd, fwd

    seen = []
    config = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}

    def launch(kernel, grid, key, args, kwargs, chosen, tune):
        seen.append((kernel.fn, args, _traced._with_defaults(kernel.fn, args,
                                                               {**kwargs, **config})))

    def launch_jit(fn, grid, args, meta):
        seen.append((fn, args, _traced._with_defaults(fn, args, meta)))

    _traced.launch, _traced.launch_jit, _traced.active = launch, launch_jit, lambda: True
    q, k, v, dout = (torch.randn(2, 4, 256, 64, dtype=torch.bfloat16) for _ in range(4))
    for causal in (False, True):
        seen.clear()
        out, lse = fwd.attention_fwd(q, k, v, causal, 0.125)
        bwd.attention_bwd(dout, q, k, v, out, lse, causal, 0.125)
        for fn, args, meta in seen:
            kwargs = {**dict(zip((p.name for p in fn.params), args)), **meta}
            print(json.dumps([fn.__name__, causal, writes_of(fn, kwargs)]))


def test_recorded_launches_write_only_their_outputs() -> None:
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    env["FLASHDUO_DIRECT_LAUNCH"] = "0"
    run = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    if run.returncode == SKIP:
        pytest.skip("this torch / triton lacks the write analysis or the driver API the probe uses")
    assert run.returncode == 0, run.stderr[-3000:]
    got = {}
    for line in run.stdout.splitlines():
        name, causal, writes = json.loads(line)
        got[(name, causal)] = writes
    assert got == EXPECTED


if __name__ == "__main__":
    _probe()
