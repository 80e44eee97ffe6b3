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
    "report",
    "baseline",
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
    def _group(
        version: bool = typer.Option(False, "--version", help="print the clews-pipe version and exit",
                                     is_eager=True, callback=_print_version),
    ) -> None:
        # a callback keeps the app a command group even while only one command is registered
        pass

    for name in COMMAND_MODULES:
        importlib.import_module(f"clews_pipe.cli.{name}").register(app)
    return app


def _print_version(value: bool) -> None:
    if value:
        from clews_pipe import __version__

        typer.echo(f"clews-pipe {__version__}")
        raise typer.Exit(0)


def _click_exception_types() -> tuple[type, ...]:
    """Click's exception base classes: typer >= 0.26 raises those of its own bundled click, which
    are not subclasses of the ``click`` package's (both are caught)."""
    import click

    types: list[type] = [click.exceptions.ClickException, click.exceptions.Abort]
    try:
        from typer._click import exceptions as bundled
    except ImportError:  # an older typer uses the click package itself
        return tuple(types)
    return tuple(types + [bundled.ClickException] + ([bundled.Abort] if hasattr(bundled, "Abort") else []))


def _report_click_exception(exc: Exception) -> int:
    """A usage error as one ``error:`` line plus the command's usage hint; exit 2."""
    if type(exc).__name__ == "Abort":
        print("aborted", file=sys.stderr)
        return 1
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help was shown: nothing else to say
        return 2
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(message.split())
    ctx = getattr(exc, "ctx", None)
    message += _option_written_as_override(message, ctx)
    print(f"error: {message}", file=sys.stderr)
    if ctx is not None:
        usage = " ".join(ctx.get_usage().split())
        print(f"{usage}  (see '{ctx.command_path} --help')", file=sys.stderr)
    return int(getattr(exc, "exit_code", 2) or 2)


def _option_written_as_override(message: str, ctx) -> str:
    """A hint when ``key=value`` was given where the command takes ``--key value``."""
    if ctx is None or "extra argument" not in message:
        return ""
    options = {name for param in ctx.command.params for name in getattr(param, "opts", ()) if name.startswith("--")}
    for word in message.replace("(", " ").replace(")", " ").split():
        key, eq, value = word.partition("=")
        if eq and f"--{key.replace('_', '-')}" in options:
            return f" (options are written --{key.replace('_', '-')} {value}, not {word})"
    return ""


def main(argv: list[str] | None = None) -> int:
    app = build_app()
    try:
        # with standalone_mode=False click returns typer.Exit's code instead of raising it
        exit_code = app(args=argv, standalone_mode=False, prog_name="clews-pipe")
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
    except Exception as exc:  # click usage errors (missing/unknown argument, option or command)
        if isinstance(exc, _click_exception_types()):
            return _report_click_exception(exc)
        raise
    return exit_code if isinstance(exit_code, int) else 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
