"""Rows that see a single key: their gradients are zero in exact arithmetic, and bit for bit.

A query row that sees one key (every row when Nk = 1; row 0 under the top-left causal mask) has
P = 1 on that key, so dS = P * (dP - delta) = 0 for any input: its dq is 0, and so is the dk of a
key that no other row sees. The kernels must give exact zeros there, not the rounding residue of
dP - delta, while out, lse and the other gradients still pass the rule against float64.
"""

from __future__ import annotations

import pytest
import torch

import flashduo
from tests.cases import Case, assert_close
from tests.helpers import KINDS, NAMES, case_inputs, run_backend, run_reference, skip_if_unrunnable

# (hq, hkv, nq, nk, causal)
SHAPES = [
    (2, 2, 1, 1, False),
    (2, 2, 5, 1, False),
    (2, 2, 70, 1, False),
    (2, 2, 40, 40, True),  # row 0 alone; key 0 is also seen by the other rows
    (2, 2, 3, 1, True),  # Nq > Nk: every row sees key 0 alone
    (4, 2, 1, 17, True),  # GQA, a single causal query: key 0 is seen by one-key rows only
]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]
D = 64

PARAMS = [
    pytest.param(backend, Case(1, hq, hkv, nq, nk, D, dtype, causal),
                 id=f"{backend}-{Case(1, hq, hkv, nq, nk, D, dtype, causal).id}")
    for backend in ("triton", "cuda")
    for dtype in DTYPES
    if dtype in flashduo.get_backend(backend).dtypes
    for hq, hkv, nq, nk, causal in SHAPES
]


def keys_seen(case: Case) -> torch.Tensor:
    """(nq, nk) bool: which keys each query row sees (top-left causal: key j iff j <= i)."""
    seen = torch.ones(case.nq, case.nk, dtype=torch.bool)
    return seen.tril() if case.causal else seen


@pytest.mark.parametrize("backend, case", PARAMS)
def test_one_key_rows_have_zero_gradients(backend: str, case: Case) -> None:
    skip_if_unrunnable(backend, case)
    q, k, v, dout = case_inputs(case, seed=case.nq + case.nk)
    got = run_backend(backend, q, k, v, case.causal, dout)
    truth, baseline = run_reference(q, k, v, case.causal, dout)
    for name, kind, x, ref, base in zip(NAMES, KINDS, got, truth, baseline):
        assert_close(f"{backend} {name}", x, ref, base, kind, case.dtype)

    seen = keys_seen(case)
    one_key = seen.sum(1) == 1
    only_one_key = ~(seen & ~one_key[:, None]).any(0)  # keys no multi-key row sees
    assert one_key.any(), "the case has no one-key row"
    _, _, dq, dk, _ = (t.cpu() for t in got)
    assert torch.count_nonzero(dq[:, :, one_key]) == 0, (
        f"dq of one-key rows: max |dq| {dq[:, :, one_key].abs().max().item():.2e}, not 0"
    )
    assert torch.count_nonzero(dk[:, :, only_one_key]) == 0, (
        f"dk of keys seen by one-key rows only: max |dk| "
        f"{dk[:, :, only_one_key].abs().max().item():.2e}, not 0"
    )
