"""The benchmark behind ``python -m flashduo bench`` (``make bench``).

Providers (``providers.py``): flashduo's backends by registry name (triton, cuda, triton-unfused),
PyTorch SDPA restricted to each of its backends (torch-flash, torch-cudnn, torch-efficient,
torch-math), compiled FlexAttention (torch-flex) and textbook attention (naive). Suites
(``suites.py``, ``tiles.py``): sweep (TFLOPS vs N), vit (ViT shapes, with and without RoPE),
scaling (time and memory vs N), tiles (BLOCK_M x BLOCK_N heatmap of the Triton kernel). One shape
is measured by ``cells.py`` with ``timing.py``; ``report.py`` makes the tables and summary,
``plots.py`` the PNGs, ``files.py`` the CSV / JSON / markdown files; ``driver.py`` runs it all.
Conventions: DESIGN.md section 4, stated in every report.
"""

from flashduo.bench.driver import SUITE_NAMES, run_benchmark
from flashduo.bench.providers import PROVIDERS, parse_providers

__all__ = ["PROVIDERS", "SUITE_NAMES", "parse_providers", "run_benchmark"]
