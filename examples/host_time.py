"""Where the host time of an eager forward+backward goes, layer by layer.

At ViT sizes a call's kernels take about as long as the Python and driver work that launches them,
so a benchmark cell can read the host instead of the GPU. This times ``out.backward(dout)`` of one
call on the host clock (median of ``--calls`` calls issued without synchronizing, the
benchmark's method) for:

- the backend itself (default ``triton`` on a GPU, ``reference`` on the CPU), and with
  autograd's backward on the calling thread (``torch.autograd.set_multithreading_enabled``);
  its forward alone, recording autograd's node;
- a backend that launches nothing (``torch.empty`` outputs) behind the same front door: the cost
  of flashduo's layers plus autograd;
- a bare ``torch.autograd.Function`` around the same do-nothing forward and backward: autograd's
  own cost;
- with ``triton``, the same call with launch plans on (``FLASHDUO_LAUNCH_PLANS``; the backward
  replays its plan too, recorded in the warm-up calls) and its launchers called directly
  (``triton_impl.fwd.attention_fwd``, ``triton_impl.bwd.attention_bwd``); cuDNN's SDPA for scale.

    PYTHONPATH=. python examples/host_time.py                  # B=16 H=32 N=1024 D=64, causal
    PYTHONPATH=. python examples/host_time.py --n 197 --heads 6 --batch 256 --no-causal
    PYTHONPATH=. python examples/host_time.py --profile 30      # and where, function by function
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import flashduo
from flashduo import registry

Inputs = list[torch.Tensor]


def _null_fwd(q, k, v, causal, scale, **_):
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)


def _null_bwd(dout, q, k, v, out, lse, causal, scale, **_):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


class _Bare(torch.autograd.Function):
    """The do-nothing forward and backward without flashduo's layers."""

    @staticmethod
    def forward(ctx, q, k, v):
        out, lse = _null_fwd(q, k, v, True, 1.0)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, dout):
        return _null_bwd(dout, *ctx.saved_tensors, True, 1.0)


def host_us(step: Callable[[], None], reset: Callable[[], None], calls: int) -> float:
    """Median host µs of ``step()`` over ``calls`` calls issued back to back (``reset()`` before
    each, untimed), after warm-up calls; the GPU is synchronized around the timed calls only."""
    for _ in range(10):
        reset()
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    for _ in range(calls):
        reset()
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e6)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return statistics.median(times)


def _rows(args: argparse.Namespace, sets: list[Inputs], dout: torch.Tensor) -> list[tuple]:
    """(label, step) for every row: fwd+bwd steps on the input sets, in turn."""
    turn = [0]

    def cycled(fn: Callable[..., torch.Tensor], backward: bool = True) -> Callable[[], None]:
        def step() -> None:
            turn[0] += 1
            out = fn(*sets[turn[0] % len(sets)])
            if backward:
                out.backward(dout)
        return step

    def via(backend: str) -> Callable[..., torch.Tensor]:
        return lambda q, k, v: flashduo.attention(q, k, v, args.causal, backend=backend)

    rows = [(f"{args.backend} forward+backward", cycled(via(args.backend)), True),
            (f"{args.backend} forward (with autograd's node)", cycled(via(args.backend), False),
             False)]
    rows.append(("front door and autograd, nothing launched", cycled(via("host-time-null")), True))
    rows.append(("bare autograd.Function, nothing launched", cycled(_Bare.apply), True))
    if sets[0][0].is_cuda:
        def cudnn(q, k, v):
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)
        try:
            cudnn(*sets[0]).backward(dout)
            rows.append(("cuDNN SDPA forward+backward", cycled(cudnn), True))
        except RuntimeError as exc:  # no cuDNN kernel for this shape or build
            print(f"cuDNN SDPA: not run ({str(exc).splitlines()[0]})")
    if args.backend == "triton" and sets[0][0].is_cuda:
        from triton_impl import _plans
        from triton_impl.bwd import attention_bwd
        from triton_impl.fwd import attention_fwd

        step, enabled = cycled(via("triton")), _plans.ENABLED

        def planned() -> None:  # the whole step: the backward replays its plan too
            _plans.ENABLED = True
            try:
                step()
            finally:
                _plans.ENABLED = enabled
        rows.insert(1, ("triton forward+backward, launch plans on", planned, True))

        q, k, v = (t.detach() for t in sets[0])
        scale = q.shape[-1] ** -0.5
        out, lse = attention_fwd(q, k, v, args.causal, scale)
        rows.append(("triton_impl.fwd.attention_fwd alone",
                     lambda: attention_fwd(q, k, v, args.causal, scale), False))
        rows.append(("triton_impl.bwd.attention_bwd alone",
                     lambda: attention_bwd(dout, q, k, v, out, lse, args.causal, scale), False))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--no-causal", dest="causal", action="store_false")
    parser.add_argument("--backend", default=None, help="default: triton on a GPU, else reference")
    parser.add_argument("--calls", type=int, default=60, help="timed calls a row")
    parser.add_argument("--profile", type=int, default=0, metavar="K",
                        help="also print the K functions with the most own time under cProfile "
                        "(the backend's forward+backward, backward on the calling thread)")
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if on_gpu else ("cpu", torch.float32)
    args.backend = args.backend or ("triton" if on_gpu else "reference")
    registry.register_backend(registry.Backend(
        name="host-time-null", fwd=_null_fwd, bwd=_null_bwd, description="launches nothing",
        dtypes=frozenset({dtype}), devices=lambda: frozenset({device})))
    gen = torch.Generator(device=device).manual_seed(0)

    def rand() -> torch.Tensor:
        return torch.randn(args.batch, args.heads, args.n, args.d, device=device, dtype=dtype,
                           generator=gen)

    sets = [[rand().requires_grad_() for _ in range(3)] for _ in range(2)]
    dout = rand()

    def clear() -> None:
        for t in (t for s in sets for t in s):
            t.grad = None

    name = torch.cuda.get_device_name() if on_gpu else "CPU"
    print(f"{name}, torch {torch.__version__}: B={args.batch} H={args.heads} N={args.n} "
          f"D={args.d} causal={args.causal} {str(dtype).removeprefix('torch.')}, "
          f"median of {args.calls} calls")
    for label, step, autograd in _rows(args, sets, dout):
        us = host_us(step, clear, args.calls)
        line = f"{label:44s} {us:8.0f} us"
        if autograd:
            torch.autograd.set_multithreading_enabled(False)
            try:
                line += f"   (backward on the calling thread {host_us(step, clear, args.calls):.0f} us)"
            finally:
                torch.autograd.set_multithreading_enabled(True)
        print(line)
    if args.profile:
        _profile(_rows(args, sets, dout)[0][1], clear, args.calls, args.profile)


def _profile(step: Callable[[], None], reset: Callable[[], None], calls: int, top: int) -> None:
    """cProfile of ``calls`` calls of ``step`` with the backward on the calling thread (a profile
    sees one thread), the ``top`` functions by own time."""
    import cProfile
    import pstats

    torch.autograd.set_multithreading_enabled(False)
    prof = cProfile.Profile()
    try:
        for _ in range(calls):
            reset()
            prof.enable()
            step()
            prof.disable()
    finally:
        torch.autograd.set_multithreading_enabled(True)
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


if __name__ == "__main__":
    main()
