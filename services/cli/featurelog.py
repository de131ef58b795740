"""``feature-log run``: the feature log sink, ``<domain>.features`` into the Feast offline store."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    feature_log = commands.add_parser(
        "feature-log", help="the feature log: feature vectors as parquet for training"
    )
    actions = feature_log.add_subparsers(dest="action", required=True)
    run = actions.add_parser(
        "run",
        help="<domain>.features -> parquet part files in the Feast offline store "
        "(foreground; SIGTERM writes the current batch and stops)",
    )
    run.add_argument("--domain", default="payments")
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from services.featurelog.main import run

    return run(args.domain)
