"""Test session setup: tuning off (one config per shape class), Triton interpreter without a GPU."""

import os

import torch

os.environ.setdefault("FLASHDUO_AUTOTUNE", "0")
if not torch.cuda.is_available():
    # Must happen before triton_impl is imported: kernels then run on the CPU.
    os.environ.setdefault("TRITON_INTERPRET", "1")
