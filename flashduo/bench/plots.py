"""PNG plots of benchmark results (matplotlib, imported lazily, Agg backend).

- ``sweep_<dtype>_<mode>.png``: TFLOPS vs N (ms per call where TFLOPS would read 0.0, as on the
  CPU: ``records.sweep_unit``), one panel per (D, causal), every provider a line;
- ``scaling.png``: time and peak memory vs N on log-log axes, fwd and fwd+bwd (time only when no
  memory was measured, as on the CPU); an out-of-memory point is marked with an x at the top of
  the panel;
- ``tiles.png``: the BLOCK_M x BLOCK_N heatmap of the Triton forward kernel's TFLOPS (none when
  the suite did not run).

Every figure has a fixed size in pixels (``SIZES``); ``write_plots`` returns the files written, or
says in one line why there are none when matplotlib is missing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from flashduo.bench.records import OK, OOM, SKIP, Row, sweep_unit
from flashduo.bench.report import UNITS

DPI = 100
SIZES = {"sweep": (1200, 900), "scaling": (1200, 900), "tiles": (800, 600)}  # pixels
SCALING_PANELS = (("ms", "ms per call"), ("mem_mb", "peak MB above inputs"))  # (Row field, title)


def matplotlib_missing() -> str | None:
    """Why no plot can be drawn here, or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no PNG plots"
    return None


def _figure(kind: str, nrows: int = 1, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w, h = SIZES[kind]
    return plt.subplots(nrows, ncols, figsize=(w / DPI, h / DPI), dpi=DPI, squeeze=False)


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _series(rows: Sequence[Row], field: str) -> tuple[list[int], list[float]]:
    pts = sorted((r.N, getattr(r, field)) for r in rows if r.status == OK)
    return [n for n, _ in pts], [y for _, y in pts]


def _n_axis(ax, ns: Sequence[int]) -> None:
    """Log-2 sequence-length axis with the measured lengths as plain-number ticks."""
    ax.set_xscale("log", base=2)
    if ns:
        ax.set_xticks(sorted(set(ns)), [str(n) for n in sorted(set(ns))])
    ax.set_xlabel("sequence length N")


def plot_sweep(rows: Sequence[Row], out_dir: str) -> list[str]:
    """One PNG per (dtype, mode) of the sweep: panels (D, causal), TFLOPS (or ms) vs N per
    provider."""
    sweep = [r for r in rows if r.tag == "sweep"]
    unit = sweep_unit(sweep)
    paths = []
    for dtype, mode in dict.fromkeys((r.dtype, r.mode) for r in sweep):
        sel = [r for r in sweep if (r.dtype, r.mode) == (dtype, mode)]
        dims = sorted({r.D for r in sel})
        fig, axes = _figure("sweep", len(dims), 2)
        for i, d in enumerate(dims):
            for j, causal in enumerate((False, True)):
                ax = axes[i][j]
                for impl in dict.fromkeys(r.impl for r in sel):
                    ns, ys = _series([r for r in sel if (r.D, r.causal, r.impl) == (d, causal, impl)],
                                     unit)
                    if ns:
                        ax.plot(ns, ys, marker="o", label=impl)
                _n_axis(ax, [r.N for r in sel])
                ax.set_title(f"D={d} causal={int(causal)}")
                ax.set_ylabel(UNITS[unit])
                ax.grid(True, alpha=0.3)
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=7)
        fig.suptitle(f"{mode} {dtype}: {UNITS[unit]} vs N ({sel[0].env.get('gpu', '')})")
        fig.tight_layout()
        paths.append(_save(fig, os.path.join(out_dir, f"sweep_{dtype}_{mode}.png")))
    return paths


def plot_scaling(rows: Sequence[Row], out_dir: str) -> list[str]:
    """scaling.png: ms and MB vs N (log-log; a row of panels each, MB only when measured), columns
    fwd and fwdbwd; x marks the first OOM."""
    sec = [r for r in rows if r.tag == "scaling"]
    if not sec:
        return []
    modes = list(dict.fromkeys(r.mode for r in sec))
    panels = [(field, label) for field, label in SCALING_PANELS
              if any(r.status == OK and getattr(r, field) > 0 for r in sec)]  # NaN > 0 is False
    if not panels:
        return []
    fig, axes = _figure("scaling", len(panels), len(modes))
    for j, mode in enumerate(modes):
        for i, (field, label) in enumerate(panels):
            ax = axes[i][j]
            for impl in dict.fromkeys(r.impl for r in sec):
                mine = [r for r in sec if (r.impl, r.mode) == (impl, mode)]
                good = [(n, y) for n, y in zip(*_series(mine, field)) if y > 0]
                if not good:
                    continue
                line, = ax.plot(*zip(*good), marker="o", label=impl)
                oom = [r.N for r in mine if r.status == OOM]
                if oom:
                    ax.plot([min(oom)], [max(y for _, y in good)], marker="x", markersize=10,
                            color=line.get_color(), linestyle="none")
            _n_axis(ax, [r.N for r in sec])
            ax.set_yscale("log")
            ax.set_title(f"{mode}: {label}")
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    r0 = sec[0]
    marks = " (x: out of memory from here)" if any(r.status == OOM for r in sec) else ""
    fig.suptitle(f"Scaling, B={r0.B} H={r0.H} D={r0.D} {r0.dtype}{marks}")
    fig.tight_layout()
    return [_save(fig, os.path.join(out_dir, "scaling.png"))]


def plot_tiles(rows: Sequence[Row], out_dir: str) -> list[str]:
    """tiles.png: heatmap of TFLOPS over BLOCK_M (rows) x BLOCK_N (columns); none when every
    tile was skipped (the report says why)."""
    sec = [r for r in rows if r.tag == "tiles"]
    if all(r.status == SKIP for r in sec):  # True when there is none
        return []
    fig, axes = _figure("tiles")
    ax = axes[0][0]
    r0 = sec[0]
    bms, bns = sorted({r.block_m for r in sec}), sorted({r.block_n for r in sec})
    cell = {(r.block_m, r.block_n): r for r in sec}
    grid = [[cell[(m, n)].tflops if (m, n) in cell else math.nan for n in bns] for m in bms]
    im = ax.imshow(grid, cmap="viridis", origin="lower")
    fig.colorbar(im, ax=ax, label="TFLOPS")
    ax.set_xticks(range(len(bns)), [str(n) for n in bns])
    ax.set_yticks(range(len(bms)), [str(m) for m in bms])
    ax.set_xlabel("BLOCK_N (keys per tile)")
    ax.set_ylabel("BLOCK_M (queries per tile)")
    for i, m in enumerate(bms):
        for j, n in enumerate(bns):
            r = cell.get((m, n))
            text = "" if r is None else (f"{r.tflops:.0f}" if r.status == OK else r.status)
            ax.text(j, i, text, ha="center", va="center", color="w")
    ax.set_title(f"{r0.impl} fwd TFLOPS, B={r0.B} H={r0.H} N={r0.N} D={r0.D} {r0.dtype}")
    fig.tight_layout()
    return [_save(fig, os.path.join(out_dir, "tiles.png"))]


def write_plots(rows: Sequence[Row], out_dir: str) -> tuple[list[str], str | None]:
    """Draw every plot the rows allow into out_dir: (paths written, why none were drawn)."""
    why = matplotlib_missing()
    if why:
        return [], why
    os.makedirs(out_dir, exist_ok=True)
    return plot_sweep(rows, out_dir) + plot_scaling(rows, out_dir) + plot_tiles(rows, out_dir), None
