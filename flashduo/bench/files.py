"""The files a benchmark run leaves in its output folder.

- ``results.csv``: one line per cell, every Row field plus the GPU name and library versions;
- ``results.json``: the environment, rows and SDPA checks (NaN as null);
- ``report.md``: the terminal text, with the PNG plots linked under their section;
- the PNGs themselves (``flashduo.bench.plots``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, fields

from flashduo.bench.records import Check, Row

ENV_KEYS = ("gpu", "capability", "torch", "cuda", "triton", "cudnn", "flashduo", "autotune")
CSV_FIELDS = [f.name for f in fields(Row) if f.name != "env"] + list(ENV_KEYS)


def default_out_dir(gpu: str) -> str:
    """``bench_results/<gpu-name>``, the name made safe for a folder (e.g. NVIDIA_H100_80GB_HBM3)."""
    return os.path.join("bench_results", re.sub(r"[^A-Za-z0-9.-]+", "_", gpu).strip("_") or "gpu")


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(x, float) and math.isnan(x) else x) for k, x in d.items()}


def write_csv(path: str, rows: Sequence[Row]) -> None:
    """results.csv: one line per row, NaN as an empty cell."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            data = {k: v for k, v in asdict(row).items() if k != "env"}
            data.update({k: row.env.get(k, "") for k in ENV_KEYS})
            writer.writerow({k: ("" if v is None else v) for k, v in _clean(data).items()})


def write_json(path: str, rows: Sequence[Row], checks: Sequence[Check], env: dict) -> None:
    """results.json: env, rows (without their copy of env) and checks."""
    data = {
        "env": env,
        "rows": [_clean({k: v for k, v in asdict(r).items() if k != "env"}) for r in rows],
        "checks": [_clean({**asdict(c), "ok": c.ok}) for c in checks],
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def read_json(path: str) -> tuple[list[Row], dict]:
    """(rows, env) back from a ``results.json`` written by ``write_json`` (null as NaN)."""
    with open(path) as f:
        data = json.load(f)
    env = data["env"]
    names = {f.name for f in fields(Row)}
    rows = []
    for raw in data["rows"]:
        values = {k: (math.nan if v is None else v) for k, v in raw.items() if k in names}
        rows.append(Row(**values, env=env))
    return rows, env


def report_markdown(sections: Sequence[tuple[str, str, Sequence[str]]], head: str,
                    tail: str) -> str:
    """The report: ``head``, then per (title, table, plot paths) a heading, the table and the
    plots as images (paths relative to the report), then ``tail``."""
    parts = ["# flashduo benchmark", "", head]
    for title, table, plots in sections:
        parts += ["", f"## {title}", "", table]
        for path in plots:
            name = os.path.basename(path)
            parts += ["", f"![{name}]({name})"]
    parts += ["", tail]
    return "\n".join(parts) + "\n"


def write_all(out_dir: str, rows: Sequence[Row], checks: Sequence[Check], env: dict,
              report: str) -> list[str]:
    """Write results.csv, results.json and report.md into out_dir; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, n) for n in ("results.csv", "results.json", "report.md")]
    write_csv(paths[0], rows)
    write_json(paths[1], rows, checks, env)
    with open(paths[2], "w") as f:
        f.write(report)
    return paths
