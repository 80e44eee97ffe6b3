"""``clews-pipe train CONFIG --store STORE --out RUNDIR [key=value ...]``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

STOPPED_EXIT = 75  # EX_TEMPFAIL: stopped by a signal at a step boundary; rerun the same command to resume


def register(app: typer.Typer) -> None:
    @app.command(
        "train",
        context_settings={"allow_extra_args": False},
        help=(
            "Train CLEWS on a feature store with Lightning Fabric (DDP over fabric.devices × fabric.nodes). "
            "Running the same command again on RUNDIR resumes at the next epoch. "
            "Example: clews-pipe train configs/dvi-clews.yaml --store dvi.store --out runs/dvi "
            "fabric.devices=4 fabric.nodes=2. "
            "SIGUSR1/SIGTERM stop it at the next step (exit status 75); the same command resumes."
        ),
    )
    def train_command(
        config: Path = typer.Argument(..., help="YAML config (configs/dvi-clews.yaml, shs-clews.yaml, tiny-cpu.yaml)."),
        overrides: Optional[List[str]] = typer.Argument(None, help="OmegaConf dotlist overrides, e.g. training.epochs=5."),
        store: Optional[Path] = typer.Option(None, "--store", help="Feature store (sets data.store)."),
        out: Path = typer.Option(..., "--out", help="Run directory: config, checkpoints, metrics.csv, TensorBoard logs."),
        allow_data_change: bool = typer.Option(False, "--allow-data-change", help="resume on another store or other splits than the run started with"),
    ) -> None:
        from clews_pipe.errors import ClewsError
        from clews_pipe.training import stop

        stop.install()  # before the heavy imports: a SLURM signal during start-up is a stop request
        from clews_pipe.model.run_config import load_train_config
        from clews_pipe.training import loop

        if "=" in str(config) and not Path(config).exists():  # the published train.py form
            given = dict(str(x).partition("=")[::2] for x in [str(config), *(overrides or [])] if "=" in str(x))
            raise ClewsError(
                f"'{config}' is the published train.py form; clews-pipe takes "
                f"'clews-pipe train {given.get('conf', 'CONFIG.yaml')} --store STORE --out {given.get('jobname', 'RUN_DIR')} [key=value ...]'"
            )
        items = list(overrides or [])
        if store is not None:
            items.append(f"data.store={store}")
        conf = load_train_config(config, items, require_store=True)
        loop.train(conf, out, allow_data_change=allow_data_change)
        if loop.STOP_SIGNAL is not None:
            raise typer.Exit(STOPPED_EXIT)
