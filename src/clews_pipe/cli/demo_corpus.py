"""``clews-pipe demo-corpus OUT --cliques N --seed S``: write a synthetic Discogs-VI-layout corpus."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer


def demo_corpus(
    out: Path = typer.Argument(..., help="folder to write the corpus into (audio/ + split JSONs)"),
    cliques: int = typer.Option(50, "--cliques", min=1, help="number of cliques (songs)"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of every random choice"),
    versions_min: int = typer.Option(2, "--versions-min", min=1, help="fewest versions per clique"),
    versions_max: int = typer.Option(6, "--versions-max", min=1, help="most versions per clique"),
    duration_min: float = typer.Option(40.0, "--duration-min", help="shortest version, seconds"),
    duration_max: float = typer.Option(100.0, "--duration-max", help="longest version, seconds"),
    samplerate: int = typer.Option(16000, "--samplerate", min=8000, help="sample rate of the written audio"),
    splits: str = typer.Option("0.7,0.15,0.15", "--splits", help="train,val,test fractions of the cliques"),
    workers: int = typer.Option(0, "--workers", min=0, help="render processes (0: one per CPU core, at most 8)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
) -> None:
    """Synthesise musical versions (same melody/harmony; own key, tempo, timbre, structure, noise)."""
    from clews_pipe.errors import ClewsError
    from clews_pipe.datasets.demo_corpus import generate_corpus

    try:
        fractions = tuple(float(v) for v in splits.split(","))
    except ValueError:
        raise ClewsError(f"--splits '{splits}': expected three comma-separated numbers, e.g. 0.7,0.15,0.15") from None
    n_workers = workers or min(os.cpu_count() or 1, 8)
    summary = generate_corpus(
        out,
        cliques=cliques,
        seed=seed,
        versions_min=versions_min,
        versions_max=versions_max,
        duration_min=duration_min,
        duration_max=duration_max,
        samplerate=samplerate,
        workers=n_workers,
        split_fractions=fractions,
        progress=not as_json,
    )
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    splits = ", ".join(f"{s} {v['cliques']} cliques / {v['tracks']} tracks" for s, v in summary["splits"].items())
    formats = ", ".join(f"{n} {ext}" for ext, n in sorted(summary["formats"].items()))
    typer.echo(
        f"{summary['root']}: {summary['tracks']} tracks in {summary['cliques']} cliques "
        f"({summary['audio_seconds'] / 3600:.2f} h; {formats}) in {summary['elapsed_s']:.1f} s"
    )
    typer.echo(f"splits: {splits}")
    typer.echo(f"extract: clews-pipe extract --dataset discogs-vi --meta {summary['meta']} --audio {summary['audio']} --out STORE")


def register(app: typer.Typer) -> None:
    app.command("demo-corpus")(demo_corpus)
