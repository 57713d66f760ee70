"""The Python examples run end to end (CPU: reference backend; GPU: their defaults)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from tests.cases import ON_GPU

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_example(*args: str, timeout: int) -> subprocess.CompletedProcess:
    """Run `python examples/<args>` from the repository root, flashduo importable from there."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_vit_demo_trains() -> None:
    run = run_example("examples/vit_demo.py", "--steps", "3", "--grid", "7", timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    losses = [float(line.split()[-1]) for line in run.stdout.splitlines() if line.startswith("step")]
    assert len(losses) == 3 and losses[-1] < losses[0], run.stdout


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_timm_rope_vit_check() -> None:
    backend = () if ON_GPU else ("--backend", "reference")  # not the Triton interpreter: minutes
    run = run_example("examples/timm_rope_vit.py", "--batch", "2", "--no-time", *backend,
                      timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("max rel diff") == 2, run.stdout


def test_navit_packing_matches_image_by_image() -> None:
    """The packed call with per-image RoPE grids equals attending to each image alone (its
    default backend: reference on the CPU, one that takes packed sequences on a GPU)."""
    run = run_example("examples/navit_packing.py", "--images", "5", "--max-grid", "9",
                      timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    head, check = run.stdout.splitlines()[:2]
    diff = float(check.split()[-1])
    assert diff < (1e-5 if head.endswith("float32") else 3e-2), run.stdout


def test_host_time_reports_every_layer() -> None:
    """examples/host_time.py prints a host time for the backend, its forward, the front door with
    nothing launched, a bare autograd.Function and (on a GPU) cuDNN and the triton launchers
    alone, then a profile."""
    run = run_example("examples/host_time.py", "--batch", "2", "--heads", "4", "--n", "128",
                      "--calls", "5", "--profile", "3", timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    table, _, profile = run.stdout.partition("function calls")
    assert "Ordered by: internal time" in profile, run.stdout
    rows = [line for line in table.splitlines() if line.rstrip().endswith(("us", "us)"))]
    labels = ["forward+backward", "forward (with autograd's node)", "front door", "bare"]
    if ON_GPU:
        labels += ["launch plans on", "attention_fwd alone", "attention_bwd alone"]
    assert all(any(label in row for row in rows) for label in labels), run.stdout
    assert all(float(row.split(" us")[0].split()[-1]) > 0 for row in rows), run.stdout
