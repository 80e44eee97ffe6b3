"""``clews-pipe checkpoint import OFFICIAL.ckpt --config configuration.yaml --out CKPT``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

checkpoint_app = typer.Typer(help="Convert and inspect model checkpoints.", no_args_is_help=True)


@checkpoint_app.command("import")
def import_checkpoint(
    official: Path = typer.Argument(..., help="published CLEWS checkpoint (checkpoint_best.ckpt)"),
    config: Optional[Path] = typer.Option(None, "--config", help="its configuration.yaml (default: the checkpoint's own conf)"),
    out: Path = typer.Option(..., "--out", help="clews-pipe checkpoint to write"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow arbitrary pickled objects in the checkpoint"),
) -> None:
    """Turn a published CLEWS checkpoint into one every clews-pipe command loads (weights-only)."""
    from clews_pipe.model.checkpoint import import_official

    payload = import_official(official, config, out, trust=trust_checkpoint)
    n_params = sum(int(v.numel()) for v in payload["model"].values())
    model = payload["config"]["model"]
    typer.echo(f"{out}: {len(payload['model'])} tensors ({n_params:,} values), zdim {model['zdim']}, "
               f"shingles {model['shingling']['len']} s, epoch {payload['epoch']}")


def register(app: typer.Typer) -> None:
    app.add_typer(checkpoint_app, name="checkpoint")
