"""``clews-pipe evaluate`` (track / segment level) and ``clews-pipe fuse``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from clews_pipe.errors import ClewsError


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ClewsError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ClewsError(f"{what}: no values in {text!r}")
    return values


def evaluate(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="model checkpoint (with --store)"),
    store: Optional[Path] = typer.Option(None, "--store", help="feature store (with --checkpoint)"),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="embeddings (.npz file or chunked embeddings.zarr store) instead of checkpoint + store"),
    split: str = typer.Option("test", "--split", help="partition of the store to evaluate"),
    redux: Optional[str] = typer.Option(None, "--redux", help="track-level reduction: min, max, mean, meanmin, minmean, best-<r>, bpwr-<r> (default: the checkpoint's eval.redux, else bpwr-10)"),
    protocol: str = typer.Option("clews", "--protocol", help="clews (the published protocol) or clews-pipe (distractors kept, NAR over true negatives, full shingle count)"),
    distractors: Optional[bool] = typer.Option(None, "--distractors/--no-distractors", help="keep cliques with < 2 available versions as distractors (default: the protocol's)"),
    nar: Optional[str] = typer.Option(None, "--nar", help="NAR reported as NAR: published (query counted as a negative) or strict (default: the protocol's)"),
    shingles: Optional[str] = typer.Option(None, "--shingles", help="shingles per track: published (int((maxlen-len)/hop)) or full (default: the protocol's)"),
    level: str = typer.Option("track", "--level", help="track or segment"),
    taus: str = typer.Option("5,10,20,30,40,60,90", "--taus", help="segment level: query lengths in seconds"),
    out: Path = typer.Option(Path("eval-out"), "--out", help="output folder"),
    devices: int = typer.Option(1, "--devices", help="processes (CPU) or GPUs per node"),
    nodes: int = typer.Option(1, "--nodes", help="nodes"),
    accelerator: str = typer.Option("cpu", "--accelerator", help="cpu, gpu or auto"),
    maxlen: Optional[float] = typer.Option(None, "--maxlen", help="seconds of each track used (default: the checkpoint's eval.maxlen, else 600)"),
    cslen: Optional[float] = typer.Option(None, "--cslen", help="candidate shingle length in s (default: eval.shingle_len, else the model's)"),
    cshop: Optional[float] = typer.Option(None, "--cshop", help="candidate shingle hop in s (default: eval.shingle_hop, else 5)"),
    qslen: Optional[float] = typer.Option(None, "--qslen", help="track-level query shingle length in s (default: cslen)"),
    qshop: Optional[float] = typer.Option(None, "--qshop", help="query shingle hop in s (default: eval.shingle_hop, else 5)"),
    batch_size: int = typer.Option(32, "--batch-size", help="shingles per model call (checkpoint path)"),
    tile: int = typer.Option(512, "--tile", help="tracks per tile side (= Zarr chunk)"),
    memory_mb: float = typer.Option(256.0, "--memory-mb", help="memory budget of one block of segment distances"),
    matmul_precision: str = typer.Option("fp32", "--matmul-precision", help="segment-distance matmul: fp32, tf32 or bf16 (values deciding ranks recomputed in fp32)"),
    export_wealy: Optional[Path] = typer.Option(None, "--export-wealy", help="also write the matrix as a WEALY pickle"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow arbitrary pickled objects in the checkpoint"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Distance matrix + MAP / MR1 / NAR for a checkpoint on a store split, or for an embeddings file."""
    from clews_pipe.evaluation.distances import TileSettings
    from clews_pipe.evaluation.job import EvaluateJob
    from clews_pipe.ranks import run_on_ranks

    from clews_pipe.retrieval.protocol_options import Protocol

    from clews_pipe.atomic import check_dir_target

    check_dir_target(out, "--out folder")
    chosen = Protocol.parse(protocol, distractors=distractors, nar=nar, shingles=shingles)
    tau_values = tuple(_floats(taus, "--taus")) if level == "segment" else ()
    if export_wealy is not None and level != "track":
        raise ClewsError("--export-wealy writes the track-level matrix: use it with --level track")
    if tile < 1:
        raise ClewsError(f"--tile must be >= 1, got {tile}")
    from clews_pipe.retrieval.tiles import check_precision

    settings = TileSettings(tile=tile, memory_mb=memory_mb, precision=check_precision(matmul_precision))
    job = EvaluateJob.resolve(
        checkpoint=checkpoint, store=store, embeddings=embeddings, split=split, redux=redux, level=level,
        taus=tau_values, out=out, settings=settings, maxlen=maxlen, cslen=cslen, cshop=cshop, qslen=qslen,
        qshop=qshop, batch_size=batch_size, trust=trust_checkpoint, progress=not quiet, protocol=chosen,
    )
    result = run_on_ranks(job, devices=devices, nodes=nodes, accelerator=accelerator)
    if result is None:  # not rank 0
        return
    if export_wealy is not None:
        from clews_pipe.evaluation.wealy import export_wealy as write_wealy

        write_wealy(out / "distances.zarr", export_wealy, {"split": split, "checkpoint": str(checkpoint or ""), "embeddings": str(embeddings or "")})
        typer.echo(f"WEALY pickle: {export_wealy}")
    _print_result(result, out)


def _print_result(result: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = result["per_tau"] if result.get("level") == "segment" else [result]
    table = Table(title=f"{result['level']} level, {result['redux']}, protocol {result.get('protocol', '?')}")
    if result.get("level") == "segment":
        table.add_column("tau [s]", justify="right")
    for name in ("NAR (%)", "NAR strict (%)", "MAP", "MR1", "queries", "skipped", "MAP chance"):
        table.add_column(name, justify="right")
    for row in rows:
        cells = [f"{row['tau']:g}"] if "tau" in row else []
        cells += [
            f"{row['NAR']:.2f} ± {row['NAR_ci']:.2f}", f"{row['NAR_strict']:.2f} ± {row['NAR_strict_ci']:.2f}",
            f"{row['MAP']:.3f} ± {row['MAP_ci']:.3f}",
            f"{row['MR1']:.1f} ± {row['MR1_ci']:.1f}", str(row["queries"]), str(row["skipped"]),
            f"{row.get('MAP_chance', float('nan')):.3f}",
        ]
        table.add_row(*cells)
    Console().print(table)
    per_query = out / ("tau_*" if result.get("level") == "segment" else "") / "per_query.csv"
    typer.echo(f"written: {out / 'metrics.json'}, {out / 'metrics.md'}, {per_query}")


def fuse(
    matrix_a: Path = typer.Argument(..., help="distances.zarr folder or WEALY pickle"),
    matrix_b: Path = typer.Argument(..., help="distances.zarr folder or WEALY pickle"),
    alphas: str = typer.Option("0,0.25,0.5,0.75,1", "--alphas", help="weights alpha of B in A + alpha*B"),
    out: Path = typer.Option(Path("fusion.csv"), "--out", help="CSV with MAP/MR1/NAR per alpha"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="unpickle WEALY files without the restricted loader (runs code in them)"),
) -> None:
    """Evaluate the late fusion A + alpha * B of two distance matrices over the same tracks."""
    from clews_pipe.evaluation.fuse import fuse as run_fuse

    rows = run_fuse(matrix_a, matrix_b, _floats(alphas, "--alphas"), out, trust_pickle=trust_pickle)
    for row in rows:
        typer.echo(f"alpha={row['alpha']:g}  NAR={row['NAR']:.2f}  MAP={row['MAP']:.3f}  MR1={row['MR1']:.1f}")
    typer.echo(f"written: {out}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("fuse")(fuse)
