"""``bench``: measured speed, on the embedded stack (figures go to docs/benchmarks.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.core.settings import StackSettings


def register(commands: Any) -> None:
    bench = commands.add_parser("bench", help="benchmarks on a fresh embedded stack")
    targets = bench.add_subparsers(dest="target", required=True)
    featurizer = targets.add_parser(
        "featurizer", help="the featurizer alone: events/s into vectors"
    )
    featurizer.add_argument("--events", type=int, default=100_000)
    featurizer.add_argument("--cards", type=int, default=10_000)
    featurizer.add_argument("--out", type=Path, default=Path(".streamml/bench/featurizer.json"))
    featurizer.set_defaults(handler=cmd_featurizer)


def cmd_featurizer(args: argparse.Namespace) -> int:
    from services.bench import featurizer

    result = featurizer.run(StackSettings(), events=args.events, cards=args.cards)
    featurizer.report(result, args.out)
    return 0
