"""``run featurizer`` and ``run scorer``: the long-running services."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    run = commands.add_parser(
        "run", help="run a service in the foreground (SIGTERM stops it cleanly)"
    )
    services = run.add_subparsers(dest="service", required=True)
    featurizer = services.add_parser("featurizer", help="events -> features")
    featurizer.add_argument(
        "--domain", action="append", help="only these domains (default: all declared)"
    )
    featurizer.set_defaults(handler=cmd_featurizer)
    scorer = services.add_parser(
        "scorer", help="features -> predictions (confluent-kafka, ONNX Runtime)"
    )
    scorer.add_argument("--domain", default="payments")
    scorer.set_defaults(handler=cmd_scorer)


def cmd_featurizer(args: argparse.Namespace) -> int:
    from services.featurizer.main import run

    return run(args.domain)


def cmd_scorer(args: argparse.Namespace) -> int:
    from services.scorer.main import run

    return run(args.domain)
