"""``bench``: measured speed, on the embedded stack (figures go to docs/benchmarks.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError
from services.core.settings import StackSettings


def register(commands: Any) -> None:
    bench = commands.add_parser("bench", help="benchmarks on a fresh embedded stack")
    targets = bench.add_subparsers(dest="target", required=True)
    featurizer = targets.add_parser(
        "featurizer", help="the featurizer alone: events/s into vectors"
    )
    featurizer.add_argument("--events", type=int, default=100_000)
    featurizer.add_argument("--cards", type=int, default=10_000)
    featurizer.add_argument(
        "--core",
        type=int,
        default=None,
        help="run the featurizer on this CPU alone, the rest on the others (default: no pinning)",
    )
    featurizer.add_argument("--out", type=Path, default=Path(".streamml/bench/featurizer.json"))
    featurizer.set_defaults(handler=cmd_featurizer)
    scorer = targets.add_parser(
        "scorer", help="the scorer alone: predictions per CPU-second, and the latency it adds"
    )
    scorer.add_argument("--events", type=int, default=100_000)
    scorer.add_argument("--cards", type=int, default=10_000)
    scorer.add_argument("--rate", type=float, default=1000.0, help="latency phase: vectors/s")
    scorer.add_argument("--latency-seconds", type=float, default=20.0)
    scorer.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STREAMML_SCORER_X=VALUE",
        help="a scorer setting for the run (repeatable), e.g. STREAMML_SCORER_BATCH_WAIT_MS=0",
    )
    scorer.add_argument("--out", type=Path, default=Path(".streamml/bench/scorer.json"))
    scorer.set_defaults(handler=cmd_scorer)


def cmd_featurizer(args: argparse.Namespace) -> int:
    from services.bench import featurizer
    from services.bench.output import report

    result = featurizer.run(StackSettings(), events=args.events, cards=args.cards, core=args.core)
    report(result, args.out)
    return 0


def cmd_scorer(args: argparse.Namespace) -> int:
    from services.bench import scorer
    from services.bench.output import report

    result = scorer.run(
        StackSettings(),
        events=args.events,
        cards=args.cards,
        rate=args.rate,
        latency_seconds=args.latency_seconds,
        scorer_settings=dict(_setting(item) for item in args.set),
    )
    report(result, args.out)
    return 0


def _setting(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.startswith("STREAMML_SCORER_"):
        raise ConfigError(f"--set wants STREAMML_SCORER_<NAME>=<value>, not {item!r}")
    return name, value
