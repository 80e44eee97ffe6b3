"""The typer command-line app: one thin module per command group."""
