"""``clews-pipe baseline``: the training-free chroma cross-recurrence (Qmax) matcher on a store split,
written as an evaluation folder (``metrics.json``, ``metrics.md``, ``per_query.csv``)."""

from __future__ import annotations

from pathlib import Path

import typer


def baseline(
    store: Path = typer.Option(..., "--store", help="feature store"),
    split: str = typer.Option("test", "--split", help="partition of the store to evaluate"),
    out: Path = typer.Option(Path("eval-baseline"), "--out", help="output folder"),
    protocol: str = typer.Option("clews", "--protocol", help="clews (published) or clews-pipe"),
    maxlen: float = typer.Option(600.0, "--maxlen", help="seconds of each track used"),
    devices: int = typer.Option(1, "--devices", help="processes (ranks); query rows are sharded over them"),
    nodes: int = typer.Option(1, "--nodes", help="nodes"),
    tile: int = typer.Option(64, "--tile", help="query rows per block (= distance-matrix chunk)"),
    m: int = typer.Option(10, "--m", min=1, help="delay-embedding dimension (paper: 10)"),
    tau: int = typer.Option(1, "--tau", min=1, help="delay-embedding step in chroma frames (paper: 1)"),
    kappa: float = typer.Option(0.1, "--kappa", min=0.001, max=1.0, help="fraction of nearest neighbours in the cross-recurrence (paper: 0.1)"),
    gamma_o: float = typer.Option(5.0, "--gamma-o", help="Qmax disruption onset penalty (paper: 5)"),
    gamma_e: float = typer.Option(0.5, "--gamma-e", help="Qmax disruption extension penalty (paper: 0.5)"),
    pool: int = typer.Option(5, "--pool", min=1, help="CQT frames (10/s) averaged per chroma frame"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Chroma cross-recurrence Qmax (Serrà, Serra & Andrzejak 2009) over a split: MAP / MR1 / NAR."""
    from clews_pipe.atomic import check_dir_target
    from clews_pipe.baseline.job import BaselineJob
    from clews_pipe.baseline.qmax import QmaxSettings
    from clews_pipe.errors import ClewsError
    from clews_pipe.ranks import run_on_ranks
    from clews_pipe.reporting.eval_dir import markdown_table
    from clews_pipe.retrieval.protocol_options import Protocol

    check_dir_target(out, "--out folder")
    if tile < 1:
        raise ClewsError(f"--tile must be >= 1, got {tile}")
    if not Path(store).exists():
        raise ClewsError(f"--store {store}: does not exist")
    job = BaselineJob(store=store, out=out, split=split, maxlen=maxlen, tile=tile, progress=not quiet,
                      settings=QmaxSettings(m=m, tau=tau, kappa=kappa, gamma_o=gamma_o, gamma_e=gamma_e, pool=pool),
                      protocol=Protocol.parse(protocol))
    summary = run_on_ranks(job, devices=devices, nodes=nodes, accelerator="cpu")
    if summary is None:  # not rank 0
        return
    typer.echo(markdown_table([summary]), nl=False)
    typer.echo(f"metrics: {out / 'metrics.json'}  per query: {out / 'per_query.csv'}")


def register(app: typer.Typer) -> None:
    app.command("baseline")(baseline)
