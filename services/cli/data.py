"""``produce`` synthetic events and ``consume`` any topic as JSON lines."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from services.core.settings import StackSettings, load_settings
from services.producer.publish import DEFAULT_CARDS


def register(commands: Any) -> None:
    produce = commands.add_parser(
        "produce", help="publish synthetic events to a domain's events topic"
    )
    produce.add_argument("domain", choices=["payments"], help="domains with a synthetic generator")
    produce.add_argument("--count", type=int, default=1000)
    produce.add_argument(
        "--rate", type=float, default=1000.0, help="events per second (0: as fast as possible)"
    )
    produce.add_argument("--seed", type=int, default=1)
    produce.add_argument(
        "--cards", type=int, default=DEFAULT_CARDS, help="size of the card population"
    )
    produce.add_argument("--outcomes", action="store_true", help="also each event's truth")
    produce.add_argument(
        "--label-delay", type=float, default=0.0, metavar="S", help="seconds to each outcome"
    )
    produce.add_argument(
        "--drift",
        action="append",
        metavar="KIND@N",
        help="data@N, concept@N or pattern@N (docs/monitor.md)",
    )
    produce.set_defaults(handler=cmd_produce)
    consume = commands.add_parser("consume", help="print a topic's records as JSON lines")
    consume.add_argument("topic")
    consume.add_argument("--count", type=int, help="stop after this many records")
    consume.add_argument(
        "--timeout", type=float, default=10.0, help="stop after this many idle seconds"
    )
    consume.set_defaults(handler=cmd_consume)


def cmd_produce(args: argparse.Namespace) -> int:
    from services.producer.publish import produce

    print(
        produce(
            args.domain,
            count=args.count,
            rate=args.rate,
            seed=args.seed,
            cards=args.cards,
            outcomes=args.outcomes,
            label_delay_s=args.label_delay,
            drifts=args.drift,
        ),
        file=sys.stderr,
    )
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from services.producer.consume import print_records

    settings = load_settings(StackSettings)
    print_records(settings, args.topic, sys.stdout, count=args.count, idle_timeout_s=args.timeout)
    return 0
