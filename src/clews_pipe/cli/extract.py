"""``clews-pipe extract``: audio → CQT → feature store, as a Dask job."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def extract(
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides key=value (e.g. part_size=32)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="discogs-vi | shs100k | folder"),
    meta: Optional[Path] = typer.Option(None, "--meta", help="metadata: split JSONs (DVI) or the SHS100K list dir"),
    audio: Optional[Path] = typer.Option(None, "--audio", help="audio root directory"),
    out: Optional[Path] = typer.Option(None, "--out", help="feature store to create or extend"),
    backend: Optional[str] = typer.Option(None, "--backend", help="zarr (default) | hdf5"),
    workers: Optional[int] = typer.Option(None, "--workers", help="LocalCluster worker processes (default: one per core)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="attach to a running Dask scheduler at ADDRESS"),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="local (default) | slurm (dask-jobqueue)"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (configs/extract-local.yaml)"),
    print_job_script: bool = typer.Option(False, "--print-job-script", help="print the SLURM worker job script and exit"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    verify: bool = typer.Option(False, "--verify", help="check every part's crc32 before the run; re-extract the tracks of parts that fail"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="extract tracks recorded 'failed' again"),
    allow_split_overlap: bool = typer.Option(False, "--allow-split-overlap", help="accept ids listed in a training and an evaluated split (the first listed wins)"),
) -> None:
    """Extract CQT features of every catalog track into STORE (reruns only do what is missing)."""
    from clews_pipe.extract.config import load_extract_config

    conf = load_extract_config(
        config, overrides or [],
        dataset=dataset, meta=meta, audio=audio, out=out, backend=backend, workers=workers,
        scheduler=scheduler, cluster=cluster, progress=False if quiet else None,
        verify=True if verify else None, retry_failed=True if retry_failed else None,
        allow_split_overlap=True if allow_split_overlap else None,
    )
    if print_job_script:
        from clews_pipe.extract.cluster import slurm_job_script

        typer.echo(slurm_job_script(conf))
        return

    from clews_pipe.extract.job import run_extract
    from clews_pipe.extract.report import ExtractProgress, print_summary

    with ExtractProgress(enabled=bool(conf.progress)) as progress:
        summary = run_extract(conf, on_start=progress.start, on_part=progress.part_done)
    print_summary(summary)
    if summary["parts"] == 0 and summary["already_done"] and not summary["missing_recorded"]:
        typer.echo(f"nothing to do: all {summary['already_done']} catalog tracks are already in {summary['store']}")
    if summary["lost_parts"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("extract", context_settings={"allow_interspersed_args": True})(extract)
