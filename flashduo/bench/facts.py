"""What a run measured, compared: speed ratios of the flashduo backends over the baselines, and
the fastest provider, per configuration.

A configuration is one shape (dtype, D, causal, B, H, N) in one mode of one suite. The speed ratio
of a backend over a baseline is baseline ms / backend ms at the same configuration (> 1: the
backend is faster); it exists only where both were measured. The fastest baseline of a
configuration is its fastest measured provider that is neither one of the backends compared nor
in ``NOT_COMPARABLE``.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from flashduo.bench.records import NOROPE, OK, Row

FASTEST_BASELINE = "fastest baseline"
NOT_COMPARABLE = (NOROPE,)  # computes less (attention without the rotation): never the fastest
MIN_N = 1024  # the sweep's ratio spreads count the lengths from this one up

Config = tuple[str, int, bool, int, int, int, str]  # dtype, D, causal, B, H, N, mode
Cell = Mapping[str, Row]  # impl -> its row, at one configuration


def config_of(row: Row) -> Config:
    """The configuration a row was measured at."""
    return (row.dtype, row.D, row.causal, row.B, row.H, row.N, row.mode)


def configurations(rows: Iterable[Row]) -> dict[Config, dict[str, Row]]:
    """Rows grouped by configuration, each as impl -> row, in first-seen order."""
    out: dict[Config, dict[str, Row]] = {}
    for r in rows:
        out.setdefault(config_of(r), {})[r.impl] = r
    return out


def _ms(cell: Cell, impl: str) -> float:
    """ms of ``impl`` at this configuration; NaN unless it was measured."""
    r = cell.get(impl)
    return r.ms if r is not None and r.status == OK and r.ms > 0 else math.nan


def fastest(cell: Cell) -> str | None:
    """The measured provider with the lowest ms (``NOT_COMPARABLE`` left out); None if none."""
    timed = [(ms, impl) for impl in cell if impl not in NOT_COMPARABLE
             and not math.isnan(ms := _ms(cell, impl))]
    return min(timed)[1] if timed else None


def baseline_ms(cell: Cell, baseline: str, backends: Sequence[str]) -> float:
    """ms of ``baseline`` here; for ``FASTEST_BASELINE``, the lowest ms of a measured provider
    other than ``backends`` and ``NOT_COMPARABLE``. NaN when there is none."""
    if baseline != FASTEST_BASELINE:
        return _ms(cell, baseline)
    pool = [_ms(cell, i) for i in cell if i not in backends and i not in NOT_COMPARABLE]
    pool = [ms for ms in pool if not math.isnan(ms)]
    return min(pool) if pool else math.nan


def speed_ratio(cell: Cell, backend: str, baseline: str, backends: Sequence[str]) -> float:
    """baseline ms / backend ms at one configuration (> 1: backend faster); NaN unless both were
    measured."""
    return baseline_ms(cell, baseline, backends) / _ms(cell, backend)


@dataclass(frozen=True)
class Spread:
    """min / median / max of speed ratios over ``count`` configurations."""

    lo: float
    median: float
    hi: float
    count: int


def ratio_spreads(rows: Iterable[Row], backends: Sequence[str], baselines: Sequence[str],
                  min_n: int = 0) -> dict[tuple[str, str, str], Spread]:
    """(backend, mode, baseline) -> Spread of the speed ratios over the configurations with
    N >= ``min_n`` where both were measured; ``baselines`` may include ``FASTEST_BASELINE``.
    Pairs never measured together are absent."""
    ratios: dict[tuple[str, str, str], list[float]] = {}
    for config, cell in configurations(r for r in rows if r.N >= min_n).items():
        for be in backends:
            for base in baselines:
                ratio = speed_ratio(cell, be, base, backends)
                if not math.isnan(ratio):
                    ratios.setdefault((be, config[-1], base), []).append(ratio)
    return {key: Spread(min(v), statistics.median(v), max(v), len(v)) for key, v in ratios.items()}


def fastest_counts(rows: Iterable[Row]) -> tuple[Counter[str], int]:
    """(how many configurations each provider is the fastest at, configurations with any
    measured provider)."""
    winners = [fastest(cell) for cell in configurations(rows).values()]
    counted = [w for w in winners if w is not None]
    return Counter(counted), len(counted)
