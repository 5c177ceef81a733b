"""`python -m jpo.train` and `jpo train`: train, export or learn continuously from one config."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from jpo.errors import ConfigError, JpoError, exit_code_for
from jpo.train.continuous import run_continuous
from jpo.train.trainer import (
    Storage,
    export_latest,
    jsonable,
    load_train_config,
    parse_set_overrides,
    train,
)

__all__ = ["main", "run_cli"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jpo.train",
        description="Train or export the SAC policy.",
    )
    parser.add_argument(
        "--config", default=None, help="training YAML file (default configs/train.yaml)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (dotted, value as YAML), e.g. --set stop.iterations=2",
    )
    parser.add_argument("--resume", action="store_true", help="restore the latest checkpoint first")
    parser.add_argument(
        "--continuous", action="store_true", help="run the continuous-learning loop"
    )
    parser.add_argument("--stop-iters", type=int, default=None, help="override stop.iterations")
    parser.add_argument("--storage", default=None, help="override storage.path (folder or URI)")
    parser.add_argument("--export", default=None, help="export the actor to this folder at the end")
    parser.add_argument(
        "--export-only", action="store_true", help="export the latest checkpoint, do not train"
    )
    parser.add_argument("--cycles", type=int, default=None, help="continuous: stop after N cycles")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return parser


def run_cli(
    config: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    continuous: bool = False,
    stop_iters: int | None = None,
    storage: str | None = None,
    export: str | None = None,
    export_only: bool = False,
    cycles: int | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Do what ``python -m jpo.train`` / ``jpo train`` were asked; return a JSON summary.

    ``overrides`` are ``--set key=value`` items. ``export_only`` describes the checkpoint
    by the config recorded beside it (the config file only locates the storage).
    """
    cfg = load_train_config(config, parse_set_overrides(overrides))
    if continuous:
        reports = run_continuous(cfg, storage_path=storage, max_cycles=cycles)
        return {"cycles": [r.as_dict() for r in reports]}
    if export_only:
        if export is None and cfg.export.dir is None:
            raise ConfigError("--export-only needs --export DIR (or export.dir in the config)")
        out = export_latest(
            cfg, Storage(storage or cfg.storage.path), export or str(cfg.export.dir)
        )
        return {"exported": str(out)}
    result = train(
        cfg, resume=resume, stop_iterations=stop_iters, storage_path=storage, export_dir=export
    )
    return jsonable(
        {
            "iterations": result.iterations,
            "env_steps": result.env_steps,
            "checkpoint": result.checkpoint,
            "exported": str(result.exported) if result.exported else None,
            "episode_return_mean": result.last.get("episode_return_mean"),
        }
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m jpo.train``; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        summary = run_cli(
            args.config,
            resume=args.resume,
            continuous=args.continuous,
            stop_iters=args.stop_iters,
            storage=args.storage,
            export=args.export,
            export_only=args.export_only,
            cycles=args.cycles,
            overrides=args.overrides,
        )
    except JpoError as err:
        print(f"error: {err}", file=sys.stderr)
        return int(exit_code_for(err))
    print(json.dumps(summary))
    return 0
