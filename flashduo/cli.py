"""Command line: ``python -m flashduo {info,bench,demo}``.

``info`` lists the registered backends and why any is unavailable, the GPU and library versions.
``bench`` runs the benchmark on a CUDA GPU; without one it runs the CPU correctness demo of the
Triton kernels in Triton's interpreter instead. ``demo`` runs that demo directly.

The Triton interpreter is chosen when the kernels are imported, so the demo paths set
``TRITON_INTERPRET=1`` before anything imports ``triton_impl`` (flashduo imports it lazily).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence

NO_GPU_BENCH = (
    "no CUDA GPU visible: running the CPU correctness demo of the Triton kernels in the "
    "interpreter instead"
)


def _csv_ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m flashduo``."""
    parser = argparse.ArgumentParser(
        prog="python -m flashduo",
        description="flashduo: FlashAttention in Triton (and CUDA C++) behind one PyTorch API.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{info,bench,demo}")
    sub.required = True

    sub.add_parser("info", help="registered backends, availability, GPU and versions")

    bench = sub.add_parser(
        "bench",
        help="benchmark vs SDPA (flash, cuDNN) and FlexAttention; CPU demo without a GPU",
        description="Time flashduo backends against torch SDPA (FlashAttention-2 and cuDNN) and "
        "compiled FlexAttention: bf16, B*N=16384, H*D=2048, D in {64,128}, causal and not, "
        "fwd and fwd+bwd, plus a ViT-S row. Prints a markdown table of TFLOPS and speed ratios. "
        "Without a CUDA GPU, runs the CPU correctness demo instead.",
    )
    bench.add_argument(
        "--backend",
        action="append",
        metavar="NAME[,NAME]",
        help="flashduo backend(s) to time; repeat or comma-separate (default: triton,cuda)",
    )
    bench.add_argument("--quick", action="store_true", help="smoke run: N in {1024, 4096}, no flex")
    bench.add_argument("--no-flex", action="store_true", help="skip FlexAttention (compile time)")
    bench.add_argument("--out", metavar="DIR", help="write results.json and table.md into DIR")
    bench.add_argument(
        "--head-dim",
        type=_csv_ints,
        action="append",
        metavar="D[,D]",
        help="only these head dims (default: 64,128); to split a long run",
    )
    bench.add_argument(
        "--seqlens", type=_csv_ints, metavar="N[,N]", help="only these sequence lengths"
    )
    bench.add_argument("--no-vit", action="store_true", help="skip the ViT rows")
    bench.add_argument("--no-sweep", action="store_true", help="only the ViT rows")

    sub.add_parser(
        "demo",
        help="CPU correctness demo of the Triton kernels (Triton interpreter, no GPU needed)",
    )
    return parser


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cmd_info() -> int:
    """Print backends (with the reason any is unavailable), GPU and versions."""
    import torch

    import flashduo
    from flashduo import registry

    if torch.cuda.is_available():
        cap = ".".join(map(str, torch.cuda.get_device_capability()))
        gpu = f"{torch.cuda.get_device_name()} (sm {cap}, {torch.cuda.device_count()} visible)"
    else:
        gpu = "no GPU"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    print(f"flashduo {flashduo.__version__}")
    print(f"GPU: {gpu}")
    print(f"python {sys.version.split()[0]} | torch {torch.__version__} (CUDA {torch.version.cuda})"
          f" | triton {_version('triton')} | cuDNN {cudnn}")
    print(f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!s} "
          f"FLASHDUO_BACKEND={os.environ.get('FLASHDUO_BACKEND', '')!s} "
          f"default backend: {registry.default_backend()}")
    print("backends:")
    for name, why in flashduo.available_backends().items():
        backend = flashduo.get_backend(name)
        status = "available" if why is None else f"unavailable: {why}"
        print(f"  {name:<10} {status}")
        print(f"  {'':<10} {backend.description}")
    return 0


def cmd_demo() -> int:
    """Run the CPU correctness demo in the Triton interpreter."""
    os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton_impl
    from flashduo.demo import run_demo

    return run_demo()


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark on a GPU, else the CPU demo."""
    import torch

    if not torch.cuda.is_available():
        print(NO_GPU_BENCH, flush=True)
        return cmd_demo()

    import flashduo
    from flashduo.bench import HEAD_DIMS, parse_backends, run_benchmark

    backends = parse_backends(args.backend)
    try:
        for name in backends:
            flashduo.get_backend(name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    head_dims = [d for group in args.head_dim or [] for d in group] or list(HEAD_DIMS)
    return run_benchmark(
        backends=backends,
        quick=args.quick,
        flex=not args.no_flex,
        out_dir=args.out,
        head_dims=head_dims,
        seqlens=args.seqlens,
        vit=not args.no_vit,
        sweep=not args.no_sweep,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m flashduo`` and the ``flashduo`` console script; returns the exit
    code."""
    args = build_parser().parse_args(argv)
    if args.command == "info":
        return cmd_info()
    if args.command == "demo":
        return cmd_demo()
    return cmd_bench(args)
