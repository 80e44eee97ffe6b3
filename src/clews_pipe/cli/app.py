"""The ``clews-pipe`` typer app.

Each command group lives in its own module under ``clews_pipe.cli`` and exposes
``register(app)``; the modules import the library lazily inside their commands so that
``clews-pipe --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from clews_pipe.errors import ClewsError

# One entry per command-group module (clews_pipe.cli.<name>).
COMMAND_MODULES: list[str] = [
    "store",
    "evaluate",
    "extract",
    "demo_corpus",
    "train",
    "embed",
    "checkpoint",
    "search",
]


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="clews-pipe",
        help="Extract CQT features once, train CLEWS with Fabric, evaluate with sharded distance matrices.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _group() -> None:
        # a callback keeps the app a command group even while only one command is registered
        pass

    for name in COMMAND_MODULES:
        importlib.import_module(f"clews_pipe.cli.{name}").register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    app = build_app()
    try:
        # with standalone_mode=False click returns typer.Exit's code instead of raising it
        exit_code = app(args=argv, standalone_mode=False)
    except ClewsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except typer.Exit as exc:  # raised by commands that set their own exit code
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # click usage errors etc.
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        raise
    return exit_code if isinstance(exit_code, int) else 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
