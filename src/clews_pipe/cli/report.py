"""``clews-pipe report EVAL_DIR`` (one self-contained HTML page) and ``clews-pipe plot EVAL_DIR...``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def report(
    eval_dir: Path = typer.Argument(..., help="an evaluate --out folder"),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default EVAL_DIR/report.html)"),
) -> None:
    """One self-contained HTML file: metrics, provenance, figures and the per-query table."""
    from clews_pipe.reporting.html_report import write_report

    typer.echo(f"report: {write_report(eval_dir, out)}")


def plot(
    eval_dirs: List[Path] = typer.Argument(..., help="segment-level evaluate --out folders to overlay"),
    out: Path = typer.Option(..., "--out", help="PNG file to write"),
    labels: Optional[str] = typer.Option(None, "--labels", help="comma-separated names, one per folder"),
) -> None:
    """Overlay the segment-level NAR and MAP curves of several evaluations."""
    from clews_pipe.reporting.plots import plot_eval_dirs

    names = [s.strip() for s in labels.split(",")] if labels else None
    typer.echo(f"plot: {plot_eval_dirs(list(eval_dirs), out, names)}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("plot")(plot)
