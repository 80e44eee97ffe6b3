"""The one exception type the CLI turns into a single clear error line."""


class ClewsError(Exception):
    """Bad input the whole command cannot proceed with (wrong path, bad config key, ...).

    The message is one line that names the offending file / key / value and what is wrong.
    The CLI prints ``error: <message>`` and exits with status 2.
    """
