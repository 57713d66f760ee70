"""``flashduo.attention_varlen``: packed sequences through the front door, against attending to
each sequence alone with ``flashduo.attention`` (forward, lse, gradients), with the causal mask,
windows, softcap, GQA, empty sequences and per-image 2D RoPE (``CosSinTable.for_grids`` against
each image's own table); refusals by name, opcheck and ``torch.compile``. Runs on the CPU with the
``reference`` backend (the kernels' packed sequences: ``test_kernel_varlen``)."""

from __future__ import annotations

import pytest
import torch

import flashduo
from tests.helpers import assert_compiled_matches_eager

HQ, HKV, D = 4, 2, 16


def _cu(lens: list[int]) -> torch.Tensor:
    bounds = [0]
    for n in lens:
        bounds.append(bounds[-1] + n)
    return torch.tensor(bounds, dtype=torch.int32)


def _packed(lens_q: list[int], lens_k: list[int], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).requires_grad_()

    return rand(sum(lens_q), HQ, D), rand(sum(lens_k), HKV, D), rand(sum(lens_k), HKV, D)


def _dense(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(0, 1).unsqueeze(0)


def _one_by_one(q, k, v, lens_q, lens_k, causal, **kw):
    """out (total_q, Hq, D) and lse (Hq, total_q), each sequence through flashduo.attention."""
    outs, lses = [], []
    cq, ck = _cu(lens_q).tolist(), _cu(lens_k).tolist()
    for i in range(len(lens_q)):
        qi, ki, vi = q[cq[i]:cq[i + 1]], k[ck[i]:ck[i + 1]], v[ck[i]:ck[i + 1]]
        out, lse = flashduo.attention_with_lse(_dense(qi), _dense(ki), _dense(vi), causal,
                                               backend="reference", **kw)
        outs.append(out[0].transpose(0, 1))
        lses.append(lse[0])
    return torch.cat(outs), torch.cat(lses, dim=-1)


CASES = {  # name: (lens_q, lens_k, causal, keywords)
    "self": ([5, 9, 3], [5, 9, 3], False, {}),
    "self-causal": ([5, 9, 3], [5, 9, 3], True, {}),
    "cross": ([4, 6, 2], [7, 3, 5], False, {"softcap": 2.0}),
    "window": ([8, 12], [8, 12], False, {"window": (2, 3)}),
    "causal-window-softcap": ([8, 12], [8, 12], True, {"window": (4, 0), "softcap": 3.0}),
    "empty-sequences": ([3, 0, 4], [2, 5, 0], False, {}),
}


@pytest.mark.parametrize("name", CASES)
def test_packed_call_equals_each_sequence_alone(name: str) -> None:
    lens_q, lens_k, causal, kw = CASES[name]
    q, k, v = _packed(lens_q, lens_k)
    out, lse = flashduo.attention_varlen(q, k, v, _cu(lens_q), _cu(lens_k), max(lens_q),
                                         max(lens_k), causal, backend="reference", return_lse=True,
                                         **kw)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    want_out, want_lse = _one_by_one(q, k, v, lens_q, lens_k, causal, **kw)
    want_grads = torch.autograd.grad(want_out, (q, k, v), dout)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(lse, want_lse)
    for got, want in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, want)
    if name == "empty-sequences":  # the third query sequence has no keys
        assert (out[3:] == 0).all() and torch.isneginf(lse[:, 3:]).all()
        assert (grads[0][3:] == 0).all()


@pytest.mark.parametrize("prefix", [0, 1])
def test_per_image_rope_equals_each_image_with_its_own_table(prefix: int) -> None:
    grids = [(2, 3), (4, 4), (1, 5)]
    lens = [prefix + h * w for h, w in grids]
    q, k, v = _packed(lens, lens, seed=1)
    table = flashduo.CosSinTable.for_grids(grids, base=10.0, D=D, num_prefix_tokens=prefix)
    out = flashduo.attention_varlen(q, k, v, _cu(lens), _cu(lens), max(lens), max(lens),
                                    backend="reference", rope=table)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    bounds = _cu(lens).tolist()
    outs = []
    for i, (h, w) in enumerate(grids):
        a, b = bounds[i], bounds[i + 1]
        own = flashduo.CosSinTable(10.0, h, D, W_img=w)
        o = flashduo.attention(_dense(q[a:b]), _dense(k[a:b]), _dense(v[a:b]),
                               backend="reference", rope=own, num_prefix_tokens=prefix)
        outs.append(o[0].transpose(0, 1))
    want = torch.cat(outs)
    want_grads = torch.autograd.grad(want.square().sum(), (q, k, v))
    torch.testing.assert_close(out, want)
    for got, ref in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, ref)
    plain = flashduo.attention_varlen(q, k, v, _cu(lens), _cu(lens), max(lens), max(lens),
                                      backend="reference")
    assert not torch.allclose(out, plain), "the rotation must change the result"


def test_rope_tables_that_do_not_fit_are_refused() -> None:
    lens = [1 + 6, 1 + 16]
    q, k, v = _packed(lens, lens)
    args = (q, k, v, _cu(lens), _cu(lens), 17, 17)
    wrong = flashduo.CosSinTable.for_grids([(2, 3), (4, 3)], D=D)
    with pytest.raises(ValueError, match=r"rope table's sequences have \[7, 13\] tokens \(1 "
                                         r"prefix \+ each grid\), q's have \[7, 17\]"):
        flashduo.attention_varlen(*args, backend="reference", rope=wrong)
    with pytest.raises(ValueError, match=r"must be a CosSinTable.for_grids table"):
        flashduo.attention_varlen(*args, backend="reference", rope=flashduo.CosSinTable(D=D))
    with pytest.raises(ValueError, match=r"rope table is for D=8, q has D=16"):
        flashduo.attention_varlen(*args, backend="reference",
                                  rope=flashduo.CosSinTable.for_grids([(2, 3), (4, 4)], D=8))


@pytest.mark.parametrize("backend", [b for b in flashduo.registered_backends()
                                     if flashduo.get_backend(b).fwd_varlen is None])
def test_backends_without_packed_sequences_refuse_them_by_name(backend: str) -> None:
    why = flashduo.get_backend(backend).unavailable()
    if why:
        pytest.skip(why)
    takers = ", ".join(b for b in flashduo.registered_backends()
                       if flashduo.get_backend(b).fwd_varlen is not None)
    q, k, v = (t.detach().half() for t in _packed([3, 5], [3, 5]))
    with pytest.raises(ValueError, match=r"packed sequences \(attention_varlen\) are not "
                                         rf"supported \(backends that take them: {takers}\)"):
        flashduo.attention_varlen(q, k, v, _cu([3, 5]), _cu([3, 5]), 5, 5, backend=backend)


def test_the_packed_front_door_validates_its_arguments() -> None:
    q, k, v = _packed([3, 5], [3, 5])
    cu = _cu([3, 5])
    with pytest.raises(ValueError, match=r"cu_seqlens_k must end at the number of rows \(8\)"):
        flashduo.attention_varlen(q, k, v, cu, _cu([3, 4]), 5, 5, backend="reference")
    with pytest.raises(ValueError, match=r"window entries must be >= -1"):
        flashduo.attention_varlen(q, k, v, cu, cu, 5, 5, backend="reference", window=(0, -2))
    with pytest.raises(TypeError, match=r"return_lse must be a bool"):
        flashduo.attention_varlen(q, k, v, cu, cu, 5, 5, backend="reference", return_lse=1)


def test_packed_ops_pass_opcheck() -> None:
    lens_q, lens_k = [3, 0, 5], [4, 2, 5]
    q, k, v = _packed(lens_q, lens_k)
    table = flashduo.CosSinTable.for_grids([(1, 2), (2, 2), (1, 4)], D=D, num_prefix_tokens=1)
    cus = (_cu(lens_q), _cu(lens_k), 5, 5)
    for rope, lens in (((None, None), None), ((table.COSP, table.SINP), [3, 5, 5])):
        if lens is not None:
            q, k, v = _packed(lens, lens)
            cus = (_cu(lens), _cu(lens), 5, 5)
        args = (q, k, v, *cus, True, 0.3, "reference", *rope, True, [2, 0], 1.5)
        out, lse, *_ = torch.ops.flashduo.fwd_varlen(*args)
        torch.library.opcheck(torch.ops.flashduo.fwd_varlen.default, args)
        dout = torch.randn_like(out)
        saved = [t.detach() for t in (q, k, v, out, lse)]
        torch.library.opcheck(torch.ops.flashduo.bwd_varlen.default,
                              (dout, *saved, *cus, True, 0.3, "reference", *rope, True, False,
                               [2, 0], 1.5))


def test_packed_attention_compiles_fullgraph() -> None:
    lens = [5, 9, 3]
    cu = _cu(lens)

    def loss(q, k, v, cu):
        out = flashduo.attention_varlen(q, k, v, cu, cu, 9, 9, True, backend="reference",
                                        window=(3, -1), softcap=2.0)
        return out.square().sum()

    assert_compiled_matches_eager(lambda q, k, v: loss(q, k, v, cu), _packed(lens, lens, seed=2),
                                  "aot_eager")


def test_cu_seqlens_are_read_once_per_tensor_and_version(monkeypatch) -> None:
    """The layers of a model pass one cu_seqlens to every call: its values are read on the host
    (a GPU sync) at its first call only; an in-place change is read again and validated."""
    if flashduo.get_backend("triton").unavailable():
        pytest.skip(flashduo.get_backend("triton").unavailable())
    lens = [5, 9, 3]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, k, v = (t.detach().to(device, torch.float16) for t in _packed(lens, lens))
    cu = _cu(lens).to(device)
    reads = []
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t, f=torch.Tensor.tolist: (
        reads.append(t) or f(t)))
    for _ in range(3):  # the triton backend reads no cu_seqlens on the host itself
        flashduo.attention_varlen(q, k, v, cu, cu, 9, 9, backend="triton")
    assert sum(t is cu for t in reads) == 1, "cu_seqlens was read on the host more than once"
    cu[-1] += 1  # no longer ends at the total
    with pytest.raises(ValueError, match="cu_seqlens_q must end at the number of rows"):
        flashduo.attention_varlen(q, k, v, cu, cu, 9, 9, backend="triton")
