"""Command line: ``python -m flashduo {info,bench,plot,demo}``.

``info`` lists the registered backends and why any is unavailable, the GPU and library versions.
``bench`` runs the benchmark suites on a CUDA GPU; without one it runs the CPU correctness demo of
the Triton kernels in Triton's interpreter (its output goes into the report too), then the suites
at tiny sizes with the PyTorch providers, timed in ms. ``plot`` redraws a run's PNGs from its
results.json. ``demo`` runs that demo directly.

The Triton interpreter is chosen when the kernels are imported, so the demo paths set
``TRITON_INTERPRET=1`` before anything imports ``triton_impl`` (flashduo imports it lazily).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from flashduo.bench.driver import OPTIONAL_SUITES, SUITE_NAMES
from flashduo.bench.providers import PROVIDERS
from flashduo.bench.timing import FULL_BUDGET

NO_GPU_BENCH = (
    "no CUDA GPU visible: the CPU correctness demo of the Triton kernels in the interpreter "
    "first, then the suites at tiny sizes with the PyTorch providers"
)
DEMO_TITLE = "CPU correctness demo (Triton kernels in the interpreter vs float64)"


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
    sub = parser.add_subparsers(dest="command", metavar="{info,bench,plot,demo}")
    sub.required = True

    sub.add_parser("info", help="registered backends, availability, GPU and versions")

    bench = sub.add_parser(
        "bench",
        help="benchmark suites (providers vs each other), tables, CSV, plots, report",
        description="Time flashduo's backends against PyTorch SDPA's backends, compiled "
        "FlexAttention and textbook attention in four suites: sweep (TFLOPS vs N, B*N=16384, "
        "H*D=2048), vit (ViT shapes, with and without 2D RoPE), scaling (time and peak memory vs "
        "N), tiles (BLOCK_M x BLOCK_N heatmap of the Triton kernel). Writes results.csv, "
        "results.json, PNG plots and report.md into --out. Without a CUDA GPU: the CPU "
        "correctness demo, then the suites at tiny sizes with the PyTorch providers.",
    )
    bench.add_argument(
        "--providers",
        action="append",
        metavar="NAME[,NAME]",
        help=f"providers to time; repeat or comma-separate (default: all of {', '.join(PROVIDERS)})",
    )
    bench.add_argument(
        "--suite",
        action="append",
        metavar="NAME[,NAME]",
        help=f"suites to run; repeat or comma-separate (default: {','.join(SUITE_NAMES)}; also "
             f"{','.join(OPTIONAL_SUITES)}: windows, packed sequences, key padding, softcap)",
    )
    bench.add_argument("--quick", action="store_true",
                       help="small subset of every suite (D=64, no torch-flex, Triton autotuning "
                       "off unless FLASHDUO_AUTOTUNE is set)")
    bench.add_argument("--full", action="store_true",
                       help="fp16 and bf16 in the sweep; FlexAttention, the materializing "
                       "providers and RoPE rows at every shape; longer timing "
                       f"({FULL_BUDGET.describe()})")
    bench.add_argument("--out", metavar="DIR",
                       help="output folder (default: bench_results/<gpu-name>)")
    bench.add_argument(
        "--head-dim",
        type=_csv_ints,
        action="append",
        metavar="D[,D]",
        help="sweep head dims (default: 64,128); to split a long run",
    )
    bench.add_argument(
        "--seqlens", type=_csv_ints, metavar="N[,N]", help="only these sweep sequence lengths"
    )
    bench.add_argument("--dtype", metavar="fp16[,bf16]",
                       help="sweep dtypes (default: bf16; fp16 and bf16 with --full)")

    plot = sub.add_parser(
        "plot",
        help="redraw a benchmark's PNG plots from its results.json (no GPU needed)",
        description="Read DIR/results.json written by `bench` and draw its plots again, e.g. on "
        "a machine with matplotlib after a run on one without.",
    )
    plot.add_argument("dir", metavar="DIR", help="a bench output folder holding results.json")
    plot.add_argument("--out", metavar="DIR", help="where the PNGs go (default: DIR)")

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
    switches = sorted(f"{k}={v}" for k, v in os.environ.items()
                      if k.startswith("FLASHDUO_") and k != "FLASHDUO_BACKEND")
    print(f"other FLASHDUO_ switches set: {' '.join(switches) or 'none'}")
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


DTYPES = {"fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}


def _names(values: Sequence[str] | None) -> list[str]:
    return [x.strip() for v in values or () for x in v.split(",") if x.strip()]


def _bench_options(args: argparse.Namespace) -> dict:
    """run_benchmark's keyword arguments from the command line; ValueError for a bad value."""
    import torch

    from flashduo.bench.driver import check_names
    from flashduo.bench.providers import parse_providers

    providers = parse_providers(args.providers)
    suites = _names(args.suite) or list(SUITE_NAMES)
    check_names(providers, suites)
    dtypes = None
    if args.dtype:
        bad = [d for d in _names([args.dtype]) if d not in DTYPES]
        if bad:
            raise ValueError(f"unknown dtype(s) {', '.join(bad)}; known: fp16, bf16")
        dtypes = [getattr(torch, DTYPES[d]) for d in _names([args.dtype])]
    head_dims = [d for group in args.head_dim or [] for d in group] or None
    return dict(providers=providers, suites=suites, quick=args.quick, full=args.full,
                materializing_everywhere=bool(args.providers),
                out_dir=args.out, head_dims=head_dims, seqlens=args.seqlens, dtypes=dtypes)


class _Tee(io.TextIOBase):
    """A text stream that writes through to ``stream`` and keeps a copy of what it wrote."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.parts = stream, []

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _cpu_demo(quick: bool) -> tuple[int, str]:
    """Run the CPU correctness demo (its first cases when ``quick``): (exit code, its output).
    An interpreter that cannot run the kernels here is not a failure: the demo says why."""
    os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton_impl
    from flashduo.demo import CANNOT_RUN, demo_cases, run_demo

    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        rc = run_demo(demo_cases()[:4] if quick else None)
    return (0 if rc == CANNOT_RUN else rc), "".join(tee.parts)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark suites; without a GPU, the CPU demo first and the suites at tiny sizes."""
    import torch

    try:
        options = _bench_options(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    demo_rc = 0
    if not torch.cuda.is_available():
        print(NO_GPU_BENCH, flush=True)
        demo_rc, demo_text = _cpu_demo(args.quick)
        options["notes"] = [(DEMO_TITLE, demo_text)]
        print("\nTimings need a CUDA GPU; the suites below run at tiny sizes on the CPU with the "
              "PyTorch providers, in ms per call.\n", flush=True)
    from flashduo.bench import run_benchmark

    return run_benchmark(**options) or demo_rc


def cmd_plot(args: argparse.Namespace) -> int:
    """Redraw the plots of a bench run from its results.json."""
    from flashduo.bench import files, plots

    path = os.path.join(args.dir, "results.json")
    if not os.path.isfile(path):
        print(f"error: no results.json in {args.dir}", file=sys.stderr)
        return 2
    rows, _ = files.read_json(path)
    written, why = plots.write_plots(rows, args.out or args.dir)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(written)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m flashduo`` and the ``flashduo`` console script; returns the exit
    code."""
    args = build_parser().parse_args(argv)
    if args.command == "info":
        return cmd_info()
    if args.command == "demo":
        return cmd_demo()
    if args.command == "plot":
        return cmd_plot(args)
    return cmd_bench(args)
