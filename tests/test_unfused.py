"""The unfused Triton backend beyond the common cases: any head dim, long rows, fully masked
rows, and the refusal of score buffers that would not fit."""

from __future__ import annotations

import math

import pytest
import torch

import flashduo
from flashduo import registry
from flashduo.backends import UNFUSED_BUFFERS, unfused_limit_bytes
from tests.cases import DEVICE, Case
from tests.helpers import check_case

NAME = "triton-unfused"


def _skip_if_unavailable() -> None:
    why = flashduo.get_backend(NAME).unavailable()
    if why:
        pytest.skip(f"{NAME}: {why}")


def test_registration() -> None:
    """Registered beside the others, never the default, RoPE applied by the op layer."""
    backend = flashduo.get_backend(NAME)
    assert NAME in flashduo.registered_backends()
    assert registry.default_backend() != NAME
    assert not backend.fused_rope and backend.head_dims is None


CASES = [
    Case(1, 2, 1, 33, 47, 8, torch.float16, True),  # head dim below the 16 of a dot
    Case(1, 2, 2, 33, 47, 48, torch.float16, False),
    Case(1, 2, 2, 17, 33, 256, torch.float32, True),  # the fused kernel refuses this one
    Case(1, 2, 2, 5, 1500, 32, torch.float16, False),  # rows longer than one softmax block
    Case(1, 2, 2, 1500, 5, 32, torch.float16, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_reference(case: Case) -> None:
    check_case(NAME, case)


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")
def test_softmax_of_fully_masked_rows() -> None:
    """A row with no visible key gets lse = -inf and probabilities 0, not NaN."""
    _skip_if_unavailable()
    from triton_impl.unfused import softmax_

    s = torch.randn(1, 2, 3, 40, device=DEVICE)
    s[0, 1, 2] = float("-inf")
    s[0, 0, 1, 20:] = float("-inf")
    want_lse = torch.logsumexp(s, dim=-1)
    want = torch.softmax(s, dim=-1).nan_to_num(0.0)
    lse = torch.full(s.shape[:3], float("nan"), device=DEVICE)
    softmax_(s, lse, have_lse=False)
    torch.testing.assert_close(lse, want_lse)
    torch.testing.assert_close(s, want)


def _too_large(device: str) -> int:
    """A sequence length whose (1, 1, N, N) score buffers exceed the backend's limit."""
    return math.isqrt(unfused_limit_bytes(torch.device(device)) // (4 * UNFUSED_BUFFERS)) + 1


def test_refuses_scores_that_do_not_fit() -> None:
    _skip_if_unavailable()
    n = _too_large(DEVICE)
    q = torch.randn(1, 1, n, 16, device=DEVICE).half()
    reasons = flashduo.get_backend(NAME).not_supported_reasons(q, q, q, False)
    assert len(reasons) == 1 and f"(1, 1, {n}, {n})" in reasons[0] and "GiB" in reasons[0]
    with pytest.raises(ValueError, match=rf"triton-unfused.*\(1, 1, {n}, {n}\) buffers"):
        flashduo.attention(q, q, q, backend=NAME)
    small = q[:, :, : n // 2]
    assert not flashduo.get_backend(NAME).not_supported_reasons(small, small, small, True)
