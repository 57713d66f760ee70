"""The validation gate for the masking and packed-sequence arguments (``flashduo._validate``'s
``check_masks`` and ``check_varlen``): every bad argument raises a TypeError or ValueError that
names it, and good ones come back normalized. Runs on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from flashduo._validate import check_masks, check_varlen


def _qk(b: int = 2, hq: int = 4, hkv: int = 2, nq: int = 8, nk: int = 12, d: int = 16):
    return torch.randn(b, hq, nq, d), torch.randn(b, hkv, nk, d)


@pytest.mark.parametrize("shape", [(2, 4, 8, 12), (2, 1, 1, 12), (1, 1, 1, 12), (8, 12), (12,),
                                   (4, 8, 1), ()], ids=str)
@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.bfloat16], ids=str)
def test_masks_that_broadcast_are_accepted(shape: tuple, dtype: torch.dtype) -> None:
    q, k = _qk()
    mask = torch.zeros(shape, dtype=dtype)
    got, window, softcap = check_masks(q, k, mask, [3, -1], 30)
    assert got is mask and window == (3, -1) and softcap == 30.0
    assert isinstance(softcap, float)


@pytest.mark.parametrize("mask, exc, match", [
    ([[True]], TypeError, r"attn_mask must be a torch.Tensor"),
    (torch.zeros(8, 12, dtype=torch.int32), TypeError, r"attn_mask must be bool .*int32"),
    (torch.zeros(2, 4, 8, 11, dtype=torch.bool), ValueError,
     r"attn_mask of shape \(2, 4, 8, 11\) does not broadcast to \(B, Hq, Nq, Nk\) = \(2, 4, 8, 12\)"),
    (torch.zeros(3, 1, 1, 12, dtype=torch.bool), ValueError, r"attn_mask of shape \(3, 1, 1, 12\)"),
    (torch.zeros(2, 2, 8, 12, dtype=torch.bool), ValueError, r"\(2, 2, 8, 12\) does not broadcast"),
    (torch.zeros(1, 2, 4, 8, 12, dtype=torch.bool), ValueError, r"does not broadcast"),
    (torch.zeros(8, 12, dtype=torch.bool, device="meta"), ValueError,
     r"attn_mask must be on q's device cpu, got meta"),
], ids=["list", "int", "nk", "batch", "kv-heads", "rank-5", "device"])
def test_bad_attn_mask(mask: object, exc: type, match: str) -> None:
    q, k = _qk()
    with pytest.raises(exc, match=match):
        check_masks(q, k, attn_mask=mask)


@pytest.mark.parametrize("window, exc, match", [
    (3, TypeError, r"window must be a pair of ints"),
    ((1, 2, 3), TypeError, r"window must be a pair of ints"),
    ((1.0, 2), TypeError, r"window must be a pair of ints"),
    ((True, 2), TypeError, r"window must be a pair of ints"),
    ((-2, 0), ValueError, r"window entries must be >= -1 \(-1: unbounded\), got \(-2, 0\)"),
    ((4, -5), ValueError, r"got \(4, -5\)"),
])
def test_bad_window(window: object, exc: type, match: str) -> None:
    q, k = _qk()
    with pytest.raises(exc, match=match):
        check_masks(q, k, window=window)


@pytest.mark.parametrize("softcap, exc, match", [
    ("30", TypeError, r"softcap must be a float or None, got str"),
    (True, TypeError, r"softcap must be a float or None, got bool"),
    (0.0, ValueError, r"softcap must be a positive finite number, got 0.0"),
    (-1, ValueError, r"got -1"),
    (math.inf, ValueError, r"got inf"),
    (math.nan, ValueError, r"got nan"),
])
def test_bad_softcap(softcap: object, exc: type, match: str) -> None:
    q, k = _qk()
    with pytest.raises(exc, match=match):
        check_masks(q, k, softcap=softcap)


def test_no_masks_come_back_as_none() -> None:
    q, k = _qk()
    assert check_masks(q, k) == (None, None, None)


def _packed(lens_q=(3, 0, 5), lens_k=(4, 2, 5), hq: int = 4, hkv: int = 2, d: int = 8):
    q = torch.randn(sum(lens_q), hq, d)
    k, v = torch.randn(sum(lens_k), hkv, d), torch.randn(sum(lens_k), hkv, d)
    cu = [torch.tensor([0, *torch.tensor(n).cumsum(0).tolist()], dtype=torch.int32)
          for n in (lens_q, lens_k)]
    return q, k, v, cu[0], cu[1], max(lens_q), max(lens_k)


def test_a_good_packed_call_gives_the_scale() -> None:
    args = _packed()
    assert check_varlen(*args, False, None) == pytest.approx(8 ** -0.5)
    assert check_varlen(*args[:5], 99, 99, True, 0.5) == 0.5


def _replace(args: tuple, i: int, value: object) -> tuple:
    return (*args[:i], value, *args[i + 1:])


@pytest.mark.parametrize("i, value, exc, match", [
    (0, torch.randn(1, 11, 4, 8), ValueError, r"q must be 3-D \(total, H, D\)"),
    (1, torch.randn(11, 2, 8).int(), TypeError, r"k must be a floating-point"),
    (2, torch.randn(11, 2, 8).double(), TypeError, r"share one dtype"),
    (2, torch.randn(10, 2, 8), ValueError, r"k and v must have the same shape"),
    (0, torch.randn(8, 3, 8), ValueError, r"multiple of k/v heads"),
    (0, torch.randn(8, 4, 16), ValueError, r"same head dim"),
    (3, [0, 3, 3, 8], TypeError, r"cu_seqlens_q must be a torch.Tensor"),
    (3, torch.tensor([0, 3, 3, 8]), TypeError, r"cu_seqlens_q must be int32, got dtype torch.int64"),
    (4, torch.tensor([[0, 4, 6, 11]], dtype=torch.int32), ValueError,
     r"cu_seqlens_k must be 1-D of length batch \+ 1 >= 2"),
    (4, torch.tensor([0], dtype=torch.int32), ValueError, r"cu_seqlens_k must be 1-D"),
    (3, torch.tensor([1, 3, 3, 8], dtype=torch.int32), ValueError, r"cu_seqlens_q must start at 0"),
    (3, torch.tensor([0, 3, 2, 8], dtype=torch.int32), ValueError,
     r"cu_seqlens_q must never decrease, got 3 then 2 at index 1"),
    (4, torch.tensor([0, 4, 6, 10], dtype=torch.int32), ValueError,
     r"cu_seqlens_k must end at the number of rows \(11\), got 10"),
    (4, torch.tensor([0, 4, 11], dtype=torch.int32), ValueError,
     r"cu_seqlens_q and cu_seqlens_k must have the same length \(batch \+ 1\), got 4 and 3"),
    (4, torch.tensor([0, 4, 6, 11], dtype=torch.int32, device="meta"), ValueError,
     r"cu_seqlens_k must be on q's device cpu, got meta"),
    (5, 4, ValueError, r"max_seqlen_q=4 is smaller than the longest sequence \(5\)"),
    (6, 4.0, TypeError, r"max_seqlen_k must be an int, got float"),
    (7, 1, TypeError, r"causal must be a bool"),
    (8, -1.0, ValueError, r"scale must be a positive finite number"),
], ids=["q-rank", "k-int", "v-dtype", "kv-shape", "heads", "head-dim", "cu-list", "cu-int64",
        "cu-2d", "cu-short", "cu-start", "cu-decreasing", "cu-end", "cu-lengths", "cu-device",
        "max-short", "max-float", "causal", "scale"])
def test_bad_packed_arguments(i: int, value: object, exc: type, match: str) -> None:
    args = (*_packed(), False, None)
    with pytest.raises(exc, match=match):
        check_varlen(*_replace(args, i, value))
