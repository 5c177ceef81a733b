"""The `jpo` command line: the typer app, one module per command, and the demo."""
