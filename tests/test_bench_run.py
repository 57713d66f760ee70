"""The benchmark end to end on the CPU (``--quick``, PyTorch providers at tiny sizes): it writes its
CSV, JSON, report and PNGs; the PNGs are images of the expected size. Runs without a GPU (the
subprocess hides any GPU, as CI has none)."""

from __future__ import annotations

import csv
import math
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from flashduo.bench.providers import parse_providers, unknown_providers
from flashduo.bench.records import OOM, Row
from flashduo.demo import interpreter_blocker

ROOT = Path(__file__).resolve().parents[1]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails if the file is not a PNG."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench")
    # one CPU thread: at these tiny sizes thread hand-offs would cost more than the work itself
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(
        [sys.executable, "-m", "flashduo", "bench", "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    return proc, out


def test_quick_cpu_run_writes_csv_json_and_report(quick_run) -> None:
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "timings need a cuda gpu" in proc.stdout.lower()
    # the correctness demo ran first, unless this Triton's interpreter cannot run it (and says so)
    blocked = "CPU demo not run: triton" in proc.stdout
    assert "cases, all passed" in proc.stdout or (blocked and interpreter_blocker()), proc.stdout
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["tag"] for r in rows} == {"sweep", "vit", "scaling", "tiles"}
    assert {r["impl"] for r in rows if r["tag"] == "sweep"} == {"torch-flash", "torch-math", "naive"}
    measured = [r for r in rows if r["status"] == "ok"]
    assert measured and all(float(r["ms"]) > 0 and r["gpu"] == "cpu" and r["torch"]
                            for r in measured)
    assert all(r["status"] == "skip" for r in rows if r["tag"] == "tiles")
    assert (out / "results.json").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "## Sweep: ms per call vs N" in report and "## Scaling" in report
    assert "FLOPs = 4*B*H*N^2*D" in report and "(warm-up 10 ms, rep 30 ms)" in report
    assert "## CPU correctness demo" in report and ("4 cases" in report or blocked)
    assert "| bfloat16 | 64 | 0 | fwd | fastest |" in report
    assert "peak memory not measured" in report and "Tiles: not run (needs a CUDA GPU)" in report
    assert "## Facts summary" in report and "- sweep: " in report
    for text in (report, proc.stdout):
        assert not re.search(r"\bnan\b", text, re.IGNORECASE)
        assert "target" not in text.lower()
    assert report.strip() in proc.stdout.replace("\r", "")
    spent = next(line for line in report.splitlines() if line.startswith("- time by provider"))
    assert all(name in spent for name in ("torch-flash", "torch-math", "naive")), spent


def test_quick_cpu_run_plots(quick_run) -> None:
    pytest.importorskip("matplotlib")
    from flashduo.bench.plots import SIZES

    _, out = quick_run
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert names == {"scaling.png", "sweep_bfloat16_fwd.png", "sweep_bfloat16_bwd.png",
                     "sweep_bfloat16_fwdbwd.png"}, "no tiles heatmap without a tile measured"
    report = (out / "report.md").read_text()
    for png in pngs:
        assert png_size(png) == SIZES[png.name.split("_")[0].removesuffix(".png")], png.name
        assert f"]({png.name})" in report, f"{png.name} not linked from the report"


def test_plot_command_redraws_from_results_json(quick_run, tmp_path: Path) -> None:
    """``python -m flashduo plot DIR`` reads DIR/results.json back into rows and draws the plots
    the run drew (same files, same image sizes); a folder without results.json is an error."""
    pytest.importorskip("matplotlib")
    from flashduo.bench.files import read_json
    from flashduo.cli import main

    _, out = quick_run
    rows, env = read_json(str(out / "results.json"))
    with open(out / "results.csv", newline="") as f:
        assert len(rows) == sum(1 for _ in csv.DictReader(f))
    assert env["gpu"] == "cpu" and all(r.env is env for r in rows)
    assert main(["plot", str(out), "--out", str(tmp_path)]) == 0
    redrawn = sorted(p.name for p in tmp_path.glob("*.png"))
    assert redrawn == sorted(p.name for p in out.glob("*.png"))
    for name in redrawn:
        assert png_size(tmp_path / name) == png_size(out / name)
    assert main(["plot", str(tmp_path / "nowhere")]) == 2


def test_gpu_shaped_plots(tmp_path: Path) -> None:
    """The scaling plot with memory and OOM marks and the tiles heatmap, from synthetic rows."""
    pytest.importorskip("matplotlib")
    from flashduo.bench.plots import SIZES, write_plots

    rows = []
    for n in (1024, 2048, 4096):
        for impl, mem in (("triton", n / 100), ("naive", n * n / 1e5)):
            status = OOM if impl == "naive" and n == 4096 else "ok"
            ms = math.nan if status == OOM else n / 1000
            rows.append(Row("scaling", impl, 64, False, "fwd", n, 1, 16, ms, 1.0, status=status,
                            mem_mb=mem if status == "ok" else math.nan))
    for bm in (64, 128):
        for bn in (32, 64, 128):
            status = "ERR" if (bm, bn) == (128, 128) else "ok"
            rows.append(Row("tiles", "triton", 128, False, "fwd", 4096, 4, 16, 1.0,
                            300.0 + bm + bn if status == "ok" else math.nan, status=status,
                            block_m=bm, block_n=bn))
    paths, why = write_plots(rows, str(tmp_path))
    assert why is None
    assert sorted(os.path.basename(p) for p in paths) == ["scaling.png", "tiles.png"]
    for p in paths:
        name = os.path.basename(p).removesuffix(".png")
        assert png_size(Path(p)) == SIZES[name]


def test_cli_rejects_unknown_provider_suite_and_removed_options() -> None:
    from flashduo.cli import main

    assert main(["bench", "--providers", "nope", "--suite", "sweep"]) == 2
    assert main(["bench", "--suite", "nope"]) == 2
    for removed in ("--backend=triton", "--no-flex", "--no-vit", "--no-sweep"):
        with pytest.raises(SystemExit) as exc:
            main(["bench", removed])
        assert exc.value.code == 2, removed


def test_parse_providers() -> None:
    assert parse_providers(["triton,torch-flash", "torch-flex", "triton"]) == [
        "triton", "torch-flash", "torch-flex"]
    assert "triton-unfused" in parse_providers(None)
    assert unknown_providers(["sdpa-flash", "flex", "torch-cudnn"]) == ["sdpa-flash", "flex"]


def test_interpreter_blocker_names_the_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton < 3.7 under numpy >= 2.4 is reported as unable to run the demo; newer Triton, or
    older numpy, is not."""
    import numpy
    import triton

    monkeypatch.setattr(numpy, "__version__", "2.4.6")
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    why = interpreter_blocker()
    assert why and "triton 3.6.0" in why and "numpy 2.4.6" in why
    monkeypatch.setattr(triton, "__version__", "3.7.0")
    assert interpreter_blocker() is None
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(numpy, "__version__", "2.3.5")
    assert interpreter_blocker() is None


def test_default_gpu_plan_leaves_materializing_providers_to_scaling_and_the_vit_reference() -> None:
    """A GPU plan (built without a GPU: nothing runs) skips the materializing providers in the
    sweep and at ViT shapes other than the reference one, with the reason; naming them or --full
    times them everywhere."""
    from flashduo.bench.records import MATERIALIZING
    from flashduo.bench.suites import VIT_REF, Plan, vit_count, vit_shapes

    providers = ["torch-flash", *MATERIALIZING]
    plan = Plan(list(providers), {}, device="cuda")
    sweep = plan.impls(False, 4096, False, materializing_here=False)
    assert callable(sweep["torch-flash"])
    for name in MATERIALIZING:
        assert isinstance(sweep[name], str) and "--full" in sweep[name]
    assert all(callable(f) for f in plan.impls(False, VIT_REF[1], False).values())
    plan.materializing_everywhere = True
    assert all(callable(f) for f in plan.impls(False, 4096, False, False).values())
    shapes = vit_shapes(plan)
    rope_shapes = [s for s in shapes if s[2] == VIT_REF[1]]
    assert len(shapes) == 9 and len(rope_shapes) == 3
    # RoPE rows: triton-unfused+rope, rope-eager and rope-compiled in front of torch-flash
    modes = 2
    assert vit_count(plan) == modes * (9 * len(providers) + 3 * 3)
    plan.full = True
    assert vit_count(plan) == modes * (9 * len(providers) + 9 * 3)
    assert vit_count(Plan(list(providers), {}, device="cpu", full=True)) == modes * 9 * 4


def test_rope_rows_compute_rope_attention() -> None:
    """Each ViT-with-RoPE row (flashduo with ``rope=``, the rotation in PyTorch in front of SDPA,
    eager and compiled in one graph) computes RoPE attention: out and gradients match the float64
    reference. On the CPU: SDPA's flash backend and the reference backend, a 2 x 2 grid."""
    import torch

    import reference
    from flashduo.bench.providers import ROPE_PREFIX, rope_impls

    table = reference.CosSinTable(100.0, 2, 8, device="cpu")
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=gen).requires_grad_() for _ in range(3))
    dout = torch.randn(2, 3, 5, 8, generator=gen)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    rq, rk = (reference.apply_rope(t, table, ROPE_PREFIX) for t in (q64, k64))
    want_out = reference.attention_ref(rq, rk, v64, False)[0]
    want = (want_out, *torch.autograd.grad(want_out, (q64, k64, v64), dout.double()))
    impls = rope_impls(["torch-flash", "reference"], table)
    assert set(impls) == {"reference+rope", "rope-eager+torch-flash", "rope-compiled+torch-flash"}
    for name, fn in impls.items():
        out = fn(q, k, v)
        got = (out, *torch.autograd.grad(out, (q, k, v), dout))
        for what, g, w in zip(("out", "dq", "dk", "dv"), got, want):
            err = (g.double() - w).abs().max().item()
            assert err < 1e-4, f"{name} {what}: max abs error {err:.3g}"


def test_without_matplotlib_the_run_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """No matplotlib: no PNG, one summary line saying why, and every other file still written."""
    from flashduo.bench import cells, run_benchmark

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # ``import matplotlib`` now fails
    monkeypatch.setattr(cells, "time_ms", lambda *args: 1.0)  # nothing to learn from real timings
    assert run_benchmark(["torch-flash"], ["scaling"], quick=True, device="cpu",
                         out_dir=str(tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "results.csv",
                                                          "results.json"]
    lines = [x for x in (tmp_path / "report.md").read_text().splitlines() if "matplotlib" in x]
    assert lines == ["- matplotlib is not installed (pip install matplotlib): no PNG plots"]


def test_cuda_sm80_provider_forces_the_mma_sync_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cuda-sm80`` calls the cuda backend with FLASHDUO_CUDA_ARCH=sm80 set during the call only,
    and restores what was there."""
    import torch

    import flashduo
    from flashduo.bench import providers

    seen = []

    def fake_attention(q, k, v, backend=None, **kw):
        seen.append((backend, os.environ.get("FLASHDUO_CUDA_ARCH"), kw.get("causal")))
        return q

    monkeypatch.setattr(flashduo, "attention", fake_attention)
    monkeypatch.setenv("FLASHDUO_CUDA_ARCH", "sm90")
    x = torch.zeros(1)
    providers.make_impl("cuda-sm80", True, 8, None, "cpu")(x, x, x)
    assert seen == [("cuda", "sm80", True)]
    assert os.environ["FLASHDUO_CUDA_ARCH"] == "sm90"
    monkeypatch.delenv("FLASHDUO_CUDA_ARCH")
    providers.make_impl("cuda-sm80", False, 8, None, "cpu")(x, x, x)
    assert "FLASHDUO_CUDA_ARCH" not in os.environ
    providers.make_impl("cuda", False, 8, None, "cpu")(x, x, x)
    assert seen[-1] == ("cuda", None, False)
    assert providers.backend_of("cuda-sm80") == "cuda"
    assert "cuda-sm80" in providers.parse_providers(None)


def test_cuda_nondet_provider_runs_the_fast_backward_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cuda-nondet`` calls the cuda backend with deterministic=False; it would be unavailable if
    cuda declared a single backward mode (timing the same kernels as ``cuda``)."""
    import dataclasses

    import torch

    import flashduo
    from flashduo import registry
    from flashduo.bench import providers

    seen = []

    def fake_attention(q, k, v, backend=None, **kw):
        seen.append((backend, kw.get("deterministic"), kw.get("causal")))
        return q

    monkeypatch.setattr(flashduo, "attention", fake_attention)
    x = torch.zeros(1)
    providers.make_impl("cuda-nondet", True, 8, None, "cpu")(x, x, x)
    providers.make_impl("cuda", True, 8, None, "cpu")(x, x, x)
    assert seen == [("cuda", False, True), ("cuda", None, True)]
    assert providers.backend_of("cuda-nondet") == "cuda"
    assert "cuda-nondet" in providers.parse_providers(None)
    cuda = flashduo.get_backend("cuda")
    monkeypatch.setattr(flashduo, "available_backends", lambda: {"cuda": None})
    assert cuda.deterministic_modes
    assert providers.unavailable_reason("cuda-nondet", "cuda") is None
    monkeypatch.setitem(registry._REGISTRY, "cuda",
                        dataclasses.replace(cuda, deterministic_modes=False))
    assert "same kernels" in providers.unavailable_reason("cuda-nondet", "cuda")
