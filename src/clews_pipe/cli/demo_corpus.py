"""``clews-pipe demo-corpus OUT --cliques N --seed S [--kind synthetic|compositions]``: write a
Discogs-VI-layout corpus of musical versions (numpy-synthesised songs, or versions of real
public-domain compositions rendered with FluidSynth: :mod:`clews_pipe.datasets.compositions`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

KINDS = ("synthetic", "compositions")
#: default version lengths (s) per kind: the compositions are short pieces (chorales, reels)
DEFAULT_DURATIONS = {"synthetic": (40.0, 100.0), "compositions": (30.0, 60.0)}


def demo_corpus(
    out: Path = typer.Argument(..., help="folder to write the corpus into (audio/ + split JSONs)"),
    cliques: int = typer.Option(50, "--cliques", min=1, help="number of cliques (songs)"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of every random choice"),
    versions_min: int = typer.Option(2, "--versions-min", min=1, help="fewest versions per clique"),
    versions_max: int = typer.Option(6, "--versions-max", min=1, help="most versions per clique"),
    kind: str = typer.Option("synthetic", "--kind", help="synthetic (numpy songs, fast) or compositions (real pieces from music21's corpus, FluidSynth)"),
    renderer: str = typer.Option("auto", "--renderer", help="compositions: auto (FluidSynth when installed, else numpy), fluidsynth or numpy"),
    duration_min: Optional[float] = typer.Option(None, "--duration-min", help="shortest version, seconds (default 40 synthetic, 30 compositions)"),
    duration_max: Optional[float] = typer.Option(None, "--duration-max", help="longest version, seconds (default 100 synthetic, 60 compositions)"),
    samplerate: int = typer.Option(16000, "--samplerate", min=8000, help="sample rate of the written audio"),
    splits: str = typer.Option("0.7,0.15,0.15", "--splits", help="train,val,test fractions of the cliques"),
    train_only_cliques: int = typer.Option(0, "--train-only-cliques", min=0, help="compositions: more cliques for the train split alone (other works, 2-4 versions of 20-30 s); val and test stay as they are"),
    workers: int = typer.Option(0, "--workers", min=0, help="render processes (0: one per CPU core, at most 8)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
) -> None:
    """Musical versions: synthesised songs, or renditions of real compositions (own key, tempo,
    instrumentation, arrangement, structure, performance and recording)."""
    from clews_pipe.errors import ClewsError
    from clews_pipe.datasets.demo_corpus import generate_corpus

    if kind not in KINDS:
        raise ClewsError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    low, high = DEFAULT_DURATIONS[kind]
    duration_min = low if duration_min is None else duration_min
    duration_max = high if duration_max is None else duration_max

    try:
        fractions = tuple(float(v) for v in splits.split(","))
    except ValueError:
        raise ClewsError(f"--splits '{splits}': expected three comma-separated numbers, e.g. 0.7,0.15,0.15") from None
    n_workers = workers or min(os.cpu_count() or 1, 8)
    generate = generate_corpus
    extra = {}
    if kind == "compositions":
        from clews_pipe.datasets.compositions import generate_compositions_corpus as generate

        from clews_pipe.datasets.compositions import TrainOnlySpec

        extra = {"renderer": renderer, "log": lambda line: typer.echo(line, err=True),
                 "train_only": TrainOnlySpec(cliques=train_only_cliques)}
    elif train_only_cliques:
        raise ClewsError("--train-only-cliques applies to --kind compositions only")
    summary = generate(
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
        **extra,
    )
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    splits = ", ".join(f"{s} {v['cliques']} cliques / {v['tracks']} tracks" for s, v in summary["splits"].items())
    formats = ", ".join(f"{n} {ext}" for ext, n in sorted(summary["formats"].items()))
    typer.echo(
        f"{summary['root']}: {summary['tracks']} tracks in {summary['cliques']} cliques"
        + (f" + {summary['train_only_cliques']} train-only" if summary.get("train_only_cliques") else "") + " "
        f"({summary['audio_seconds'] / 3600:.2f} h; {formats}) in {summary['elapsed_s']:.1f} s"
        + (f", {summary['realtime_factor']:.0f}x real time, renderer {summary['renderer']}" if "renderer" in summary else "")
    )
    for line in summary.get("failed", []):
        typer.echo(f"failed: {line}")
    typer.echo(f"splits: {splits}")
    typer.echo(f"extract: clews-pipe extract --dataset discogs-vi --meta {summary['meta']} --audio {summary['audio']} --out STORE")


def register(app: typer.Typer) -> None:
    app.command("demo-corpus")(demo_corpus)
