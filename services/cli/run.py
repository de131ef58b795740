"""``run featurizer|scorer|monitor``: the long-running services, each its room's ``main.run``."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

SERVICES = {
    "featurizer": "events -> features",
    "scorer": "features -> predictions (confluent-kafka, ONNX Runtime)",
    "monitor": "predictions + outcomes + vectors -> <domain>.labelled (each joined event once)",
    "trainer": "ml.retrain.requests -> dataset, candidate, gate, canary, promotion or rollback",
}


def register(commands: Any) -> None:
    run = commands.add_parser(
        "run", help="run a service in the foreground (SIGTERM stops it cleanly)"
    )
    services = run.add_subparsers(dest="service", required=True)
    for name, summary in SERVICES.items():
        service = services.add_parser(name, help=summary)
        if name == "featurizer":
            service.add_argument(
                "--domain", action="append", help="only these domains (default: all declared)"
            )
        else:
            service.add_argument("--domain", default="payments")
        service.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    code: int = importlib.import_module(f"services.{args.service}.main").run(args.domain)
    return code
