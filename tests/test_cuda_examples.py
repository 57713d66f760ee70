"""The CUDA warm-up examples: they build with `make` wherever nvcc is; on a GPU each one passes.

Each example checks its own result against a host computation and exits non-zero on a mismatch.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHECKED = ["vector_add_simple", "vector_add", "matrix_add", "matmul_tiled", "online_softmax"]
EXAMPLES = [*CHECKED, "wgmma_gemm"]
NVCC = shutil.which(os.environ.get("NVCC", "nvcc"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    if NVCC is None:
        pytest.skip("nvcc not found: the CUDA examples cannot be built here")
    build = tmp_path_factory.mktemp("examples")  # one per test worker: no concurrent makes
    proc = subprocess.run(
        ["make", "-j2", "examples", f"NVCC={NVCC}", f"BUILD={build}"], cwd=ROOT,
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return build


def test_examples_build(built: pathlib.Path) -> None:
    for name in EXAMPLES:
        assert (built / name).is_file(), f"{name} was not built"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="running the examples needs a CUDA GPU")
@pytest.mark.parametrize("name", CHECKED)
def test_example_runs(built: pathlib.Path, name: str) -> None:
    proc = subprocess.run([str(built / name)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}{proc.stderr}"
    assert "0 mismatches" in proc.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="running the examples needs a CUDA GPU")
def test_wgmma_gemm_runs(built: pathlib.Path) -> None:
    """The TMA + wgmma GEMM checks itself (every entry of a small product, sampled entries of a
    large one) and prints its TFLOPS; on GPUs other than sm_90 it says why it skips."""
    proc = subprocess.run([str(built / "wgmma_gemm"), "4096"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"wgmma_gemm failed:\n{proc.stdout}{proc.stderr}"
    if torch.cuda.get_device_capability() == (9, 0):
        assert "TFLOPS" in proc.stdout and "max rel err" in proc.stdout
    else:
        assert "skipped" in proc.stdout
