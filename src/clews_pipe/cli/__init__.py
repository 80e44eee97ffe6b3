"""The ``clews-pipe`` command line: ``app`` builds the typer app and turns errors into one ``error:``
line; one thin module per command group parses its options and calls the library: ``extract``,
``store`` (info, verify), ``train``, ``evaluate`` (evaluate, fuse), ``embed``, ``checkpoint``
(import), ``search`` (index build, search), ``report`` (report, plot), ``demo_corpus``.
"""
