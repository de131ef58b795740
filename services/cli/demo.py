"""``demo``: the closed loop on a fresh local stack: drift, alert, retrain, canary, promotion."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="the closed loop on a fresh local stack (Apache Kafka when a JDK is found): a new "
        "fraud pattern, the alert, the retrain, canary and promotion, then a summary",
    )
    demo.add_argument(
        "--count",
        type=int,
        default=6000,
        help="payments, once the pipeline is warm, before card testing appears",
    )
    demo.add_argument("--rate", type=float, default=400.0, help="events per second")
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from services.demo.run import run

    return run(count=args.count, rate=args.rate)
