"""Records and constants shared by the benchmark (``flashduo.bench``) and its report
(``flashduo.bench_report``).

``Row`` is one timed cell, ``Check`` one backend's comparison with SDPA on one shape; the dtype,
the timed modes, the baseline implementation names and the check tolerance are used by both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("fwd", "fwdbwd")
DTYPE = torch.bfloat16
SDPA_IMPLS = ("sdpa-flash", "sdpa-cudnn")
FLEX = "flex"
NAIVE = "naive"
NOROPE = "sdpa-cudnn-norope"  # the ViT-with-RoPE section's cuDNN SDPA without the rotation
CHECK_RTOL = 5e-2  # max |x - sdpa| / max |sdpa| above this marks a backend's result SUSPECT


@dataclass
class Row:
    """One timed cell: impl at one shape and mode. ms and tflops are NaN when it failed."""

    tag: str  # "sweep" or "vit"
    impl: str
    D: int
    causal: bool
    mode: str
    N: int
    B: int
    H: int
    ms: float
    tflops: float


@dataclass
class Check:
    """Largest relative error (max |x - sdpa| / max |sdpa| over out, dq, dk, dv) of one backend."""

    tag: str
    impl: str
    D: int
    causal: bool
    N: int
    rel_err: float

    @property
    def ok(self) -> bool:
        return self.rel_err <= CHECK_RTOL  # False for NaN
