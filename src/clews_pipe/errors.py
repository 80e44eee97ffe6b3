"""The one exception type the CLI turns into a single clear error line, and the one-line text of any exception."""


class ClewsError(Exception):
    """Bad input the whole command cannot proceed with (wrong path, bad config key, ...).

    The message is one line that names the offending file / key / value and what is wrong.
    The CLI prints ``error: <message>`` and exits with status 2.
    """


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first non-empty line of ``str(exc)``; ``default`` (else the exception's type name) when empty."""
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()
    return default if default is not None else type(exc).__name__
