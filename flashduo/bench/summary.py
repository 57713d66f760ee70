"""The end of a benchmark report: the facts summary and the summary lines.

Facts summary: per flashduo backend and mode, the min / median / max speed ratio over each
baseline (``report.BASELINES``: torch-flash, torch-cudnn, torch-flex) and over the fastest baseline,
for the sweep at N >= ``facts.MIN_N`` and for the ViT shapes; the same for the ViT-with-RoPE rows
against each PyTorch row there; then how often each provider is the fastest, per suite. Summary
lines: each backend's worst SDPA check and the scaling suite's first out-of-memory lengths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from flashduo.bench.facts import FASTEST_BASELINE, MIN_N, Spread, fastest_counts, ratio_spreads
from flashduo.bench.records import CHECK_RTOL, OOM, Check, Row
from flashduo.bench.report import BASELINES, md_table, rope_backends

SPREAD_SUITES = (("sweep", MIN_N), ("vit", 0))  # (tag, smallest N counted) of the first table
FASTEST_SUITES = ("sweep", "vit", "vit-rope", "scaling")
INTRO = ("Speed ratio: baseline ms / backend ms at one configuration (shape and mode); > 1 means "
         "the backend is faster. Each cell: min / median / max over the configurations where both "
         f"were measured (their number); the sweep counts N >= {MIN_N} only. The fastest baseline "
         "of a configuration is its fastest provider other than flashduo's backends (for the RoPE "
         "rows, other than torch-cudnn-norope too: it does not rotate).")


def spread_text(spread: Spread | None) -> str:
    """"0.95 / 1.21 / 1.55 (12)": min / median / max (count); "" when there is none."""
    if spread is None:
        return ""
    return f"{spread.lo:.2f} / {spread.median:.2f} / {spread.hi:.2f} ({spread.count})"


def _spread_table(rows: Sequence[Row], suites: Sequence[tuple[str, int]],
                  backends: Sequence[str], baselines: Sequence[str]) -> list[str]:
    """Rows (suite, backend, mode), one column per baseline, for each (tag, min N) of ``suites``."""
    cols = (*baselines, FASTEST_BASELINE)
    body = []
    for tag, min_n in suites:
        sec = [r for r in rows if r.tag == tag]
        spreads = ratio_spreads(sec, backends, cols, min_n)
        label = f"{tag} N >= {min_n}" if min_n else tag
        body += [[label, be, mode, *(spread_text(spreads.get((be, mode, b))) for b in cols)]
                 for be in backends for mode in dict.fromkeys(r.mode for r in sec)]
    return md_table(["suite", "backend", "mode", *(f"vs {b}" for b in cols)], body, 3)


def facts_section(rows: Sequence[Row], backends: Sequence[str]) -> str:
    """The facts summary as markdown: ratio spread tables, then the fastest-provider counts."""
    mine = rope_backends(backends)
    rope_others = [i for i in dict.fromkeys(r.impl for r in rows if r.tag == "vit-rope")
                   if i not in mine]
    tables = [t for t in (_spread_table(rows, SPREAD_SUITES, backends, BASELINES),
                          _spread_table(rows, (("vit-rope", 0),), mine, rope_others)) if t]
    out = [INTRO]
    for table in tables:
        out += ["", *table]
    if not tables:
        out += ["", "No speed ratios: no flashduo backend was measured in this run."]
    out += ["", "Fastest provider per configuration (the tables' \"fastest\" rows), how often:"]
    for tag in FASTEST_SUITES:
        counts, total = fastest_counts(r for r in rows if r.tag == tag)
        if total:
            out.append(f"- {tag}: " + ", ".join(f"{impl} {k} of {total}"
                                                for impl, k in counts.most_common()))
    return "\n".join(out)


def _check_line(backend: str, checks: Sequence[Check]) -> str:
    worst = max(checks, key=lambda c: math.inf if math.isnan(c.rel_err) else c.rel_err)
    err = "not finite" if math.isnan(worst.rel_err) else f"{worst.rel_err:.3g}"
    return (f"{backend} check vs SDPA: worst rel err {err} ({worst.tag} D={worst.D} "
            f"causal={int(worst.causal)} N={worst.N}); {sum(not c.ok for c in checks)} of "
            f"{len(checks)} shape(s) over {CHECK_RTOL}")


def summary_lines(rows: Sequence[Row], backends: Sequence[str],
                  checks: Sequence[Check] = ()) -> list[str]:
    """Per backend its worst check against SDPA; the scaling suite's first out-of-memory N per
    provider and mode."""
    lines = [_check_line(be, mine) for be in backends
             if (mine := [c for c in checks if c.impl == be])]
    first: dict[str, int] = {}
    for r in rows:
        if r.tag == "scaling" and r.status == OOM:
            key = f"{r.impl} {r.mode}"
            first[key] = min(first.get(key, r.N), r.N)
    if first:
        lines.append("scaling: out of memory from "
                     + ", ".join(f"{k} N={first[k]}" for k in sorted(first)))
    return lines
