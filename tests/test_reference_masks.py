"""The reference's masks, softcap and packed sequences (the semantics the kernels of the masks
issue implement) against independent constructions: PyTorch's SDPA in float64 with an explicit
mask, autograd through a softcapped softmax, a block-diagonal dense mask for packed sequences,
and one table per image for packed RoPE."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import reference

GEN = torch.Generator().manual_seed(7)


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN, dtype=torch.float64)


def _qkv(b: int = 2, hq: int = 4, hkv: int = 2, nq: int = 9, nk: int = 13, d: int = 8):
    return _rand(b, hq, nq, d), _rand(b, hkv, nk, d), _rand(b, hkv, nk, d)


def _loop_band(nq: int, nk: int, causal: bool, window) -> torch.Tensor:
    """The visibility rule written out element by element."""
    keep = torch.ones(nq, nk, dtype=torch.bool)
    for i, j in itertools.product(range(nq), range(nk)):
        ok = j <= i if causal else True
        if window is not None:
            left, right = window
            ok = ok and (left < 0 or j >= i - left) and (right < 0 or j <= i + right)
        keep[i, j] = ok
    return keep


def _sdpa(q, k, v, mask, scale=None) -> torch.Tensor:
    group = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1),
                                          v.repeat_interleave(group, 1), attn_mask=mask,
                                          scale=scale)


def _seen(mask: torch.Tensor) -> torch.Tensor:
    """Rows (broadcast over B, H) that see at least one key under a bool mask."""
    return mask.any(-1)


@pytest.mark.parametrize("window", [None, (2, 1), (0, 0), (-1, 3), (4, -1), (-1, -1)], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_window_and_causal_match_an_explicit_mask(causal: bool, window) -> None:
    q, k, v = _qkv()
    keep = _loop_band(9, 13, causal, window)
    vis = reference.key_visibility(9, 13, causal, window)
    assert torch.equal(vis if vis is not None else torch.ones_like(keep), keep)
    out, lse = reference.attention_ref(q, k, v, causal, window=window)
    rows = _seen(keep)
    torch.testing.assert_close(out[:, :, rows], _sdpa(q, k, v, keep)[:, :, rows])
    assert torch.all(out[:, :, ~rows] == 0) and torch.all(torch.isneginf(lse[:, :, ~rows]))


def test_causal_is_the_window_minus_one_zero() -> None:
    q, k, v = _qkv()
    a = reference.attention_ref(q, k, v, True)
    b = reference.attention_ref(q, k, v, False, window=(-1, 0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("shape", [(2, 4, 9, 13), (2, 1, 1, 13), (1, 1, 9, 13)], ids=str)
def test_bool_and_float_masks_match_sdpa(shape: tuple) -> None:
    """attn_mask broadcast like SDPA's; it combines with causal (a key must pass both); rows with
    no key left give out 0 and lse -inf."""
    q, k, v = _qkv()
    keep = torch.rand(*shape, generator=GEN) > 0.4
    keep[..., 0, :] = False  # query row 0 sees nothing
    bias = _rand(*shape)
    for causal, mask in itertools.product((False, True), (keep, bias)):
        out, lse = reference.attention_ref(q, k, v, causal, attn_mask=mask)
        bool_mask = mask if mask.dtype == torch.bool else torch.ones(shape, dtype=torch.bool)
        both = bool_mask & reference.causal_mask(9, 13) if causal else bool_mask
        sdpa_mask = torch.where(both, mask if mask.dtype != torch.bool else 0.0, float("-inf"))
        rows = _seen(both.expand(2, 4, 9, 13))
        want = _sdpa(q, k, v, sdpa_mask)
        torch.testing.assert_close(out[rows], want[rows])
        assert torch.all(out[~rows] == 0) and torch.all(torch.isneginf(lse[~rows]))
        if mask.dtype != torch.bool and not causal:
            logits = torch.matmul(q, k.repeat_interleave(2, 1).transpose(-2, -1)) / 8 ** 0.5
            torch.testing.assert_close(lse, torch.logsumexp(logits + mask, -1))


def _autograd_attention(q, k, v, causal, attn_mask, window, softcap):
    """The forward written with autograd ops only: its gradients check the explicit backward."""
    group = q.shape[1] // k.shape[1]
    s = torch.matmul(q, k.repeat_interleave(group, 1).transpose(-2, -1)) * q.shape[-1] ** -0.5
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    keep = _loop_band(q.shape[2], k.shape[2], causal, window)
    if attn_mask is not None:
        keep = keep & attn_mask
    empty = ~keep.any(-1, keepdim=True)
    s = torch.where(keep, s, torch.zeros_like(s))
    p = torch.where(keep, torch.exp(s - s.amax(-1, keepdim=True)), torch.zeros_like(s))
    p = p / torch.where(empty, torch.ones_like(p[..., :1]), p.sum(-1, keepdim=True))
    return torch.matmul(p, v.repeat_interleave(group, 1))


@pytest.mark.parametrize("softcap", [None, 0.7, 5.0], ids=str)
@pytest.mark.parametrize("window", [None, (3, 0), (1, 2)], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_backward_matches_autograd(causal: bool, window, softcap) -> None:
    """The explicit backward (softcap's tanh derivative, GQA sums, masked and empty rows) against
    autograd through the forward written another way."""
    q, k, v = _qkv()
    keep = torch.rand(2, 1, 9, 13, generator=GEN) > 0.3
    keep[:, :, 2] = False  # an empty row: zero gradients
    dout = _rand(2, 4, 9, 8)
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    want_out = _autograd_attention(*xs, causal, keep, window, softcap)
    want = torch.autograd.grad(want_out, xs, dout)
    out, _ = reference.attention_ref(q, k, v, causal, attn_mask=keep, window=window,
                                     softcap=softcap)
    torch.testing.assert_close(out, want_out.detach())
    got = reference.attention_bwd_ref(dout, q, k, v, causal, attn_mask=keep, window=window,
                                      softcap=softcap)
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        torch.testing.assert_close(g, w, msg=name)
    assert torch.all(got[0][:, :, 2] == 0)


def test_softcap_bounds_the_scores() -> None:
    """softcap c turns scores into c tanh(s / c): a huge score no longer takes all the weight."""
    q, k, v = _qkv(1, 1, 1, 1, 2, 4)
    k[0, 0, 0] = q[0, 0, 0] * 100
    _, lse = reference.attention_ref(q, k, v, softcap=1.0)
    s = (q[0, 0] @ k[0, 0].T / 2).squeeze(0)
    torch.testing.assert_close(lse[0, 0, 0], torch.logsumexp(torch.tanh(s), 0))


def _packed(lens_q: list[int], lens_k: list[int], hq: int = 4, hkv: int = 2, d: int = 8):
    cu_q = torch.tensor([0, *itertools.accumulate(lens_q)], dtype=torch.int32)
    cu_k = torch.tensor([0, *itertools.accumulate(lens_k)], dtype=torch.int32)
    return (_rand(sum(lens_q), hq, d), _rand(sum(lens_k), hkv, d), _rand(sum(lens_k), hkv, d),
            cu_q, cu_k)


def _block_mask(lens_q, lens_k, causal, window) -> torch.Tensor:
    """(total_q, total_k): same sequence, and the per-sequence rule on local positions."""
    mask = torch.zeros(sum(lens_q), sum(lens_k), dtype=torch.bool)
    q0 = k0 = 0
    for nq, nk in zip(lens_q, lens_k):
        mask[q0:q0 + nq, k0:k0 + nk] = _loop_band(nq, nk, causal, window)
        q0, k0 = q0 + nq, k0 + nk
    return mask


@pytest.mark.parametrize("window", [None, (2, 1)], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_varlen_is_block_diagonal_attention(causal: bool, window) -> None:
    """Packed sequences (one of them empty, one with queries but no keys) attend only within
    themselves: the same out, lse and gradients as one dense call with a block-diagonal mask."""
    lens_q, lens_k = [5, 0, 7, 3, 4], [6, 0, 7, 0, 9]
    q, k, v, cu_q, cu_k = _packed(lens_q, lens_k)
    dout = _rand(*q.shape)
    out, lse = reference.attention_varlen_ref(q, k, v, cu_q, cu_k, causal, softcap=2.0,
                                              window=window)
    assert out.shape == q.shape and lse.shape == (4, q.shape[0])
    mask = _block_mask(lens_q, lens_k, causal, window)

    def dense(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1).unsqueeze(0)

    want_out, want_lse = reference.attention_ref(dense(q), dense(k), dense(v), attn_mask=mask,
                                                 softcap=2.0)
    torch.testing.assert_close(out, want_out[0].transpose(0, 1))
    torch.testing.assert_close(lse, want_lse[0])
    no_keys = slice(12, 15)  # the sequence with three queries and no keys
    assert torch.all(out[no_keys] == 0) and torch.all(torch.isneginf(lse[:, no_keys]))
    got = reference.attention_varlen_bwd_ref(dout, q, k, v, cu_q, cu_k, causal, softcap=2.0,
                                             window=window)
    want = reference.attention_bwd_ref(dense(dout), dense(q), dense(k), dense(v),
                                       attn_mask=mask, softcap=2.0)
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        torch.testing.assert_close(g, w[0].transpose(0, 1), msg=name)


def test_for_grids_rotates_each_image_by_its_own_grid() -> None:
    """One packed table turns every sequence as that image's own CosSinTable does, prefix
    tokens untouched."""
    grids, prefix, d = [(2, 3), (4, 4), (1, 5)], 1, 16
    table = reference.CosSinTable.for_grids(grids, base=100.0, D=d, num_prefix_tokens=prefix)
    assert table.seq_lens == [7, 17, 6] and table.COSP.shape == (30, d // 2)
    assert table.grids == tuple(grids) and "for_grids" in repr(table)
    x = _rand(sum(table.seq_lens), 3, d).float()
    got = reference.rotate_packed(x, table)
    start = 0
    for (h, w), n in zip(grids, table.seq_lens):
        own = reference.CosSinTable(100.0, h, d, W_img=w)
        seq = x[start:start + n].transpose(0, 1).unsqueeze(0)
        want = reference.apply_rope(seq, own, prefix)[0].transpose(0, 1)
        torch.testing.assert_close(got[start:start + n], want)
        assert torch.equal(got[start], x[start])  # the prefix token
        start += n
    back = reference.rotate_packed(got, table, inverse=True)
    torch.testing.assert_close(back, x)


@pytest.mark.parametrize("args, match", [
    (dict(grids=[]), "grids"),
    (dict(grids=[(2, 0)]), r"grids\[0\] W_img"),
    (dict(grids=[(2, 2), (True, 2)]), r"grids\[1\] H_img"),
    (dict(grids=[(2, 2)], D=10), "divisible by 4"),
    (dict(grids=[(2, 2)], base=0.0), "base"),
    (dict(grids=[(2, 2)], num_prefix_tokens=-1), "num_prefix_tokens"),
])
def test_for_grids_names_the_bad_argument(args: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        reference.CosSinTable.for_grids(**args)


def test_a_packed_table_is_refused_for_batched_inputs() -> None:
    table = reference.CosSinTable.for_grids([(2, 2)], D=8)
    with pytest.raises(ValueError, match="for_grids"):
        reference.apply_rope(_rand(1, 2, 5, 8), table, 1)
