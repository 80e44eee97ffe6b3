"""``clews-pipe store info STORE [--json]`` and ``clews-pipe store verify STORE``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

store_app = typer.Typer(help="Inspect and check a feature store.", no_args_is_help=True)


@store_app.command("info")
def info(
    store: Path = typer.Argument(..., help="feature store directory"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (with every non-ok track under 'problems')"),
) -> None:
    """Tracks per split and status, hours of audio, frames and bytes on disk."""
    from clews_pipe.store import open_store

    summary = open_store(store).summary(include_problems=as_json)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    _print_summary(summary)


@store_app.command("verify")
def verify(store: Path = typer.Argument(..., help="feature store directory")) -> None:
    """Check every part file and every ok/truncated track; exit 1 with one line per problem."""
    from clews_pipe.store import open_store

    opened = open_store(store, tolerate_damaged=True)
    problems = opened.verify()
    for line in problems:
        typer.echo(line)
    if problems:
        typer.echo(f"{store}: {len(problems)} problem(s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{store}: ok ({len(opened.index)} tracks, {len(opened.part_seqs)} parts)")


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from clews_pipe.store import STATUSES

    table = Table(title=f"{summary['path']} ({summary['backend']})")
    table.add_column("split")
    for status in STATUSES:
        table.add_column(status, justify="right")
    table.add_column("total", justify="right")
    for split, counts in sorted(summary["splits"].items()):
        table.add_row(split or "(none)", *(str(counts[s]) for s in STATUSES), str(sum(counts.values())))
    table.add_row("all", *(str(summary["statuses"][s]) for s in STATUSES), str(summary["tracks"]), style="bold")
    console = Console()
    console.print(table)
    console.print(
        f"{summary['hours']:.2f} h of audio, {summary['frames']} frames at {summary['frame_rate']:g}/s, "
        f"{summary['bytes_on_disk'] / 2**20:.1f} MiB on disk, {summary['parts']} parts "
        f"({summary['unconsolidated_parts']} not consolidated, {summary['temporary_parts']} temporary)"
    )
    if summary.get("damaged_parts_set_aside"):
        console.print(f"[yellow]{summary['damaged_parts_set_aside']} damaged part(s) set aside[/] in "
                      f"{summary['path']}/parts/.damaged-* (their tracks were extracted again; delete them after a look)")
    duplicates = summary.get("duplicates", [])
    if duplicates:
        console.print(f"[yellow]{len(duplicates)} track id(s) listed in more than one clique or split[/] (the first entry is kept):")
        for dup in duplicates[:20]:
            entries = ", ".join(f"{e['split']}/{e['clique']}" for e in dup.get("entries", []))
            console.print(f"  {dup['track_id']}: {entries}", highlight=False)
        if len(duplicates) > 20:
            console.print(f"  … {len(duplicates) - 20} more: clews-pipe store info --json")


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
