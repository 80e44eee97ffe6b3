"""``clews-pipe embed CHECKPOINT PATH... --out DIR``: one segment-embeddings file per audio file."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def embed(
    checkpoint: Path = typer.Argument(..., help="model checkpoint (clews-pipe or published CLEWS)"),
    paths: List[Path] = typer.Argument(..., help="audio files or folders (walked recursively)"),
    out: Path = typer.Option(..., "--out", help="output folder; mirrors the input folders' trees"),
    hop: float = typer.Option(5.0, "--hop", help="segment hop in seconds"),
    length: Optional[float] = typer.Option(None, "--len", help="segment length in seconds (default: the model's, 20)"),
    batch: int = typer.Option(32, "--batch", help="segments per forward pass (several files share one)"),
    maxlen: float = typer.Option(600.0, "--maxlen", help="seconds of each file used"),
    device: str = typer.Option("cpu", "--device", help="torch device (cpu, cuda, cuda:1, ...)"),
    seed: int = typer.Option(0, "--seed", help="seed of the model's input noise"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow arbitrary pickled objects in the checkpoint"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Embed audio files (any container PyAV reads); undecodable files are reported and skipped."""
    from clews_pipe.embeddings.from_audio import collect_audio_jobs, default_decode_workers, embed_audio_files
    from clews_pipe.model.checkpoint import load_model
    from clews_pipe.progress import progress_bar

    jobs = collect_audio_jobs(paths)
    model, _ = load_model(checkpoint, trust=trust_checkpoint, device=device)
    bar = progress_bar(total=len(jobs), desc="embed", unit="file", disable=quiet)

    def advance(report) -> None:
        if report.failed:
            bar.set_postfix(skipped=len(report.failed))
        bar.update(1)

    try:
        report = embed_audio_files(
            model, jobs, out, shingle_len=length, shingle_hop=hop, batch=batch, maxlen=maxlen, device=device,
            seed=seed, decode_workers=default_decode_workers(), progress=advance,
        )
    finally:
        bar.close()
    for source, reason in report.failed:
        typer.echo(f"skipped {source}: {reason}", err=True)
    for source, note in report.notes:
        typer.echo(f"warning {source}: embedded what decoded ({note})", err=True)
    typer.echo(f"embedded {len(report.written)} of {len(jobs)} file(s) into {out}"
               + (f"; {len(report.failed)} skipped" if report.failed else ""))
    if not report.written:
        typer.echo("error: no file could be embedded", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
