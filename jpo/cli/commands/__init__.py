"""CLI subcommands: one module per command, each exposing ``register(app: typer.Typer)``.

The root app (``jpo/cli/app.py``) imports the modules listed in ``jpo.cli.app.COMMAND_MODULES``.
Keep module-level imports light (typer, pathlib): ray, torch and pyarrow.dataset are
imported inside command functions so that ``jpo --help`` and ``jpo check`` start fast.
"""
