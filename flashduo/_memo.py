"""Values computed from a tensor once per tensor object and version.

The front door derives host-side values from tensors that callers pass again and again (the
``cu_seqlens`` of a packed batch, timm's rope embedding): every layer of a model hands over the
same tensor. A value is kept per tensor object while it lives and its version counter (which any
in-place change bumps) stays the same.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


class PerTensor:
    """``get(t, make)``: ``make(t)``, computed once per tensor and version, for the last
    ``limit`` tensors."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # id(t) -> (a weak reference to t, its version counter, the value)
        self._values: dict[int, tuple[weakref.ref, int, object]] = {}

    def get(self, t: torch.Tensor, make: Callable[[torch.Tensor], T]) -> T:
        hit = self._values.get(id(t))
        if hit is not None and hit[0]() is t and hit[1] == t._version:
            return hit[2]
        value = make(t)
        if len(self._values) >= self.limit:
            self._values.clear()
        self._values[id(t)] = (weakref.ref(t), t._version, value)
        return value
