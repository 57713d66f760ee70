"""Every registered backend against the float64 reference, and every pair of GPU backends."""

from __future__ import annotations

import itertools

import pytest
import torch

import flashduo
from tests.cases import CASES, ON_GPU, Case, assert_close
from tests.helpers import (
    KINDS,
    NAMES,
    case_inputs,
    check_case,
    run_backend,
    run_reference,
    skip_if_unrunnable,
)

BACKENDS = flashduo.registered_backends()
# The reference backend is the float64 math every result is compared with: comparing it with
# itself could not fail (tests/test_reference.py checks it against an independent formula).
CHECKED_BACKENDS = [b for b in BACKENDS if b != "reference"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
def test_matches_reference(backend: str, case) -> None:
    check_case(backend, case)


GPU_BACKENDS = CHECKED_BACKENDS
PAIR_CASES = [c for c in CASES if c.layout == "contiguous" and c.dtype != torch.float32][::3]


def _declares(name: str, case) -> bool:
    """Whether the backend's capability record covers the case's dtype and head dim."""
    b = flashduo.get_backend(name)
    return case.dtype in b.dtypes and (b.head_dims is None or case.d in b.head_dims)


PAIRS = [
    pytest.param(pair, case, id=f"{'-vs-'.join(pair)}-{case.id}")
    for pair in itertools.combinations(GPU_BACKENDS, 2)
    for case in PAIR_CASES
    if all(_declares(name, case) for name in pair)
]


@pytest.mark.skipif(not ON_GPU, reason="cross-implementation checks compare GPU kernels")
@pytest.mark.parametrize("pair, case", PAIRS)
def test_backends_agree(pair: tuple[str, str], case) -> None:
    """Backends compared directly: each result within the pass rule of the other."""
    a, b = pair
    q, k, v, dout = case_inputs(case, seed=7)
    for name in pair:
        assert not flashduo.get_backend(name).not_supported_reasons(q, k, v, case.causal)
    got_a = run_backend(a, q, k, v, case.causal, dout)
    got_b = run_backend(b, q, k, v, case.causal, dout)
    _, baseline = run_reference(q, k, v, case.causal, dout)
    # b stands in for the truth: a must be within the pass rule of b, the tolerance measured from
    # PyTorch's own input-dtype error against b.
    for name, kind, xa, xb, base in zip(NAMES, KINDS, got_a, got_b, baseline):
        assert_close(f"{a} vs {b} {name}", xa, xb, base, kind, case.dtype)


# A GQA causal case and, on a GPU, several query and key tiles per head at D = 64 and 128 (the
# Hopper dK/dV kernel's two query-tile heights).
DETERMINISM_CASES = [next(c for c in CASES if c.hq != c.hkv and c.causal)]
if ON_GPU:
    DETERMINISM_CASES += [Case(2, 8, 2, 1025, 1023, d, torch.bfloat16, True) for d in (64, 128)]


@pytest.mark.parametrize("case", DETERMINISM_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
def test_backward_deterministic(backend: str, case) -> None:
    """deterministic=True: two backward runs on the same inputs give bit-identical gradients."""
    skip_if_unrunnable(backend, case)
    q, k, v, dout = case_inputs(case, seed=3)
    first = run_backend(backend, q, k, v, True, dout, deterministic=True)
    second = run_backend(backend, q, k, v, True, dout, deterministic=True)
    for name, x, y in zip(NAMES, first, second):
        assert torch.equal(x, y), f"{backend} {name} differs between two runs"


# Beyond a GQA and a causal case, on a GPU: the atomic backward's partial query tiles (Nq = 130,
# 1025), GQA and multi-tile shapes at both of its head dims.
NONDETERMINISTIC_CASES = [next(c for c in CASES if c.hq != c.hkv), next(c for c in CASES if c.causal)]
if ON_GPU:
    NONDETERMINISTIC_CASES += [
        case
        for d, c in itertools.product((64, 128), (False, True))
        for case in (Case(2, 8, 2, 1025, 1023, d, torch.bfloat16, c),
                     Case(2, 2, 2, 130, 4096, d, torch.float16, c),
                     Case(1, 2, 2, 2048, 2048, d, torch.bfloat16, c))
    ]


@pytest.mark.parametrize("case", NONDETERMINISTIC_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("backend", CHECKED_BACKENDS)
def test_nondeterministic_backward_within_pass_rule(backend: str, case) -> None:
    """deterministic=False (the faster backward where a backend has one) passes the same rule."""
    check_case(backend, case, deterministic=False)


@pytest.mark.parametrize("d", [96, 256])
def test_cuda_without_atomic_mode_stays_deterministic(d: int) -> None:
    """cuda has no atomic backward at D = 96 and 256: deterministic=False gives, bit for bit, the
    gradients of deterministic=True there."""
    case = Case(2, 4, 2, 203, 150, d, torch.bfloat16, True)
    skip_if_unrunnable("cuda", case)
    q, k, v, dout = case_inputs(case, seed=5)
    det = run_backend("cuda", q, k, v, case.causal, dout, deterministic=True)
    nondet = run_backend("cuda", q, k, v, case.causal, dout, deterministic=False)
    for name, x, y in zip(NAMES, det, nondet):
        assert torch.equal(x, y), f"cuda {name} at D={d} differs with deterministic=False"
