"""``clews-pipe train CONFIG --store STORE --out RUNDIR [key=value ...]``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command(
        "train",
        context_settings={"allow_extra_args": False},
        help=(
            "Train CLEWS on a feature store with Lightning Fabric (DDP over fabric.devices × fabric.nodes). "
            "Running the same command again on RUNDIR resumes at the next epoch. "
            "Example: clews-pipe train configs/dvi-clews.yaml --store dvi.store --out runs/dvi "
            "fabric.devices=4 fabric.nodes=2"
        ),
    )
    def train_command(
        config: Path = typer.Argument(..., help="YAML config (configs/dvi-clews.yaml, shs-clews.yaml, tiny-cpu.yaml)."),
        overrides: Optional[List[str]] = typer.Argument(None, help="OmegaConf dotlist overrides, e.g. training.epochs=5."),
        store: Optional[Path] = typer.Option(None, "--store", help="Feature store (sets data.store)."),
        out: Path = typer.Option(..., "--out", help="Run directory: config, checkpoints, metrics.csv, TensorBoard logs."),
        allow_data_change: bool = typer.Option(False, "--allow-data-change", help="resume on another store or other splits than the run started with"),
    ) -> None:
        from clews_pipe.model.run_config import load_train_config
        from clews_pipe.training.loop import train

        items = list(overrides or [])
        if store is not None:
            items.append(f"data.store={store}")
        conf = load_train_config(config, items, require_store=True)
        train(conf, out, allow_data_change=allow_data_change)
