"""The benchmark behind ``python -m flashduo bench`` (``make bench``).

Providers (``providers.py``): flashduo's backends by registry name (triton, cuda, triton-unfused;
cuda-sm80 is cuda with its mma.sync forward forced, cuda-nondet cuda with deterministic=False),
PyTorch SDPA restricted to each of its backends (torch-flash, torch-cudnn, torch-efficient,
torch-math), compiled FlexAttention (torch-flex) and textbook attention (naive). Suites
(``suites.py``, ``tiles.py``): sweep (TFLOPS vs N), vit (ViT shapes, with and without RoPE),
scaling (time and memory vs N), tiles (BLOCK_M x BLOCK_N heatmap of the Triton kernel). One shape
is measured by ``cells.py`` with ``timing.py``; ``facts.py`` compares the providers, ``report.py``
makes the tables and ``summary.py`` the facts summary, ``plots.py`` the PNGs, ``files.py`` the
CSV / JSON / markdown files; ``driver.py`` runs it all.

Conventions, stated in every report: FLOPs = 4·B·H·N²·D per forward call, halved when causal, x2.5
for the backward, x3.5 for forward+backward (FlashAttention's nominal count); TFLOPS = FLOPs / time.
Time on a GPU: the median of ``triton.testing.do_bench`` after its warm-up, with the run's
``timing.Budget`` of warm-up and timed ms (``timing.budget_for``: default, ``--quick``, ``--full``),
L2 cleared before every call, inputs smaller than twice the L2 cycled over up to
``timing.MAX_ROTATION`` copies. On the CPU: the median of ``timing.CPU_MIN_REPS`` to
``CPU_MAX_REPS`` wall-clock calls after warm-up, at tiny sizes (illustrative only). Speed ratio:
baseline ms / backend ms at one configuration, > 1 when the flashduo backend is faster.
"""

from flashduo.bench.driver import run_benchmark
from flashduo.bench.timing import Budget

__all__ = ["Budget", "run_benchmark"]
