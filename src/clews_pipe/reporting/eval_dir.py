"""The evaluation folder's contract: what ``evaluate`` (and ``baseline``) write, what ``report`` and
``plot`` read.

``metrics.json`` (strict JSON: null, never NaN; the means, CIs, protocol, warnings, provenance) and
``metrics.md`` (the same as a table) are written and read here; ``per_query.csv`` is
:mod:`clews_pipe.reporting.per_query`. A rerun clears the previous files first, so a failed run
never leaves an older report beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

from clews_pipe.atomic import read_json_object, write_json_atomic, write_text_atomic
from clews_pipe.errors import ClewsError

METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
PER_QUERY_CSV = "per_query.csv"


def write_metrics(out_dir: str | Path, summary: dict, rows: list[dict] | None = None,
                  first_column: str | None = None) -> None:
    """``metrics.json`` (``summary``) and ``metrics.md`` (``rows``, default ``[summary]``, led by
    ``first_column`` when given, e.g. ``tau`` at segment level)."""
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / METRICS_JSON, summary)
    write_text_atomic(out_dir / METRICS_MD, markdown_table(rows if rows is not None else [summary], first_column))


def clear_evaluation(out_dir: str | Path) -> None:
    """Remove a previous run's ``metrics.json``, ``metrics.md`` and ``per_query.csv``."""
    for name in (METRICS_JSON, METRICS_MD, PER_QUERY_CSV):
        (Path(out_dir) / name).unlink(missing_ok=True)


def read_metrics(eval_dir: str | Path) -> dict:
    """``EVAL_DIR/metrics.json``; one ClewsError line when it is missing, unreadable or not an object."""
    path = Path(eval_dir) / METRICS_JSON
    if not path.exists():
        raise ClewsError(f"{path}: not found (is {eval_dir} an evaluation output folder?)")
    return read_json_object(path, "evaluation metrics")


def markdown_table(rows: list[dict], first_column: str | None = None) -> str:
    """Markdown table of metric dictionaries (one row each), optionally led by ``first_column``."""
    head = ([first_column] if first_column else []) + ["NAR (%)", "MAP", "MR1", "queries", "skipped", "MAP chance"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row[first_column])] if first_column else []
        cells += [
            f"{row['NAR']:.2f} ± {row['NAR_ci']:.2f}",
            f"{row['MAP']:.3f} ± {row['MAP_ci']:.3f}",
            f"{row['MR1']:.1f} ± {row['MR1_ci']:.1f}",
            str(row["queries"]),
            str(row["skipped"]),
            f"{row.get('MAP_chance', math.nan):.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
