"""``flashduo._memo.PerTensor``: a value per tensor object and version, which the front door keeps
for the tensors every layer passes again (cu_seqlens, timm's rope embedding)."""

from __future__ import annotations

import gc

import torch

from flashduo._memo import PerTensor


def test_a_value_is_made_once_per_tensor_and_version() -> None:
    made = []
    memo = PerTensor(limit=4)

    def make(t: torch.Tensor) -> float:
        made.append(t)
        return float(t.sum())

    t = torch.ones(3)
    assert memo.get(t, make) == memo.get(t, make) == 3.0 and len(made) == 1
    t.mul_(2)  # an in-place change bumps the version: made again
    assert memo.get(t, make) == 6.0 and len(made) == 2
    u = torch.ones(3)  # an equal tensor is another tensor
    assert memo.get(u, make) == 3.0 and len(made) == 3


def test_a_new_tensor_in_a_dead_ones_place_is_made_anew() -> None:
    """A tensor that reuses a dead tensor's id is not mistaken for it."""
    memo = PerTensor(limit=4)
    for i in range(50):  # CPython hands a freed tensor's id to the next one, mostly
        t = torch.full((2,), float(i))
        assert memo.get(t, lambda x: float(x[0])) == float(i), f"tensor {i} got a dead one's"
        del t
        gc.collect()


def test_the_limit_bounds_what_is_kept() -> None:
    memo = PerTensor(limit=2)
    keep = [torch.zeros(1) for _ in range(5)]
    for t in keep:
        memo.get(t, lambda x: 0)
    assert len(memo._values) <= 2
