"""Triton FlashAttention kernels and their launchers.

``attention_fwd`` / ``attention_bwd`` (and ``rotate_qk``, the 2D RoPE of q and k) are the raw
launchers behind flashduo's ``triton`` backend (``launched_configs`` names the tiles the tuned
kernels last ran with); this package never imports flashduo (the front door's
``flashduo.sdpa_triton_fa`` and friends wrap them with validation and autograd). Set
``TRITON_INTERPRET=1`` before the launchers are first used to run the kernels on the CPU. The
launchers load on first access, so ``triton_impl._env`` is importable where triton is not
installed.
"""

from __future__ import annotations

import importlib

_LAUNCHERS = {"attention_fwd": "triton_impl.fwd", "attention_bwd": "triton_impl.bwd",
              "rotate_qk": "triton_impl.rope", "launched_configs": "triton_impl._config"}

__all__ = list(_LAUNCHERS)


def __getattr__(name: str):
    if name in _LAUNCHERS:
        return getattr(importlib.import_module(_LAUNCHERS[name]), name)
    raise AttributeError(f"module 'triton_impl' has no attribute {name!r}")
