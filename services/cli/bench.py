"""``bench``: measured speed on a fresh local stack (figures go to docs/benchmarks.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.bench.fuzz import TARGETS as FUZZ_TARGETS
from services.bench.output import report
from services.core.errors import ConfigError
from services.core.settings import StackSettings


def register(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="benchmarks on a fresh local stack, Apache Kafka unless STREAMML_BROKER=embedded (no "
        "target: the whole pipeline against the tutorial-style peer)",
    )
    bench.add_argument("--quick", action="store_true", help="two short steps each (~1 minute)")
    bench.add_argument(
        "--systems",
        default="streamml,peer",
        help=(
            "comma-separated: streamml (ours), peer (faust + Feast tutorial style), "
            "quix (Quix Streams 3, exactly-once, in its own virtualenv)"
        ),
    )
    bench.add_argument("--cards", type=int, default=10_000, help="distinct cards in the load")
    bench.add_argument(
        "--rates", default=None, help="comma-separated offered rates per step (default: a ladder)"
    )
    bench.add_argument("--step-seconds", type=float, default=None, help="length of each step")
    bench.add_argument(
        "--warm-up-seconds", type=float, help="unmeasured load first (default 90 s; --quick 2 s)"
    )
    bench.add_argument(
        "--set", action="append", default=[], dest="service_settings", metavar="STREAMML_X=V",
        help="a setting for our services (repeatable)",
    )  # fmt: skip
    bench.add_argument(
        "--partitions", type=int, default=None, help="partitions of every data topic (default 4)"
    )
    bench.add_argument("--json", type=Path, default=Path(".streamml/bench/pipeline.json"))
    bench.add_argument("--plot", type=Path, default=Path(".streamml/bench/pipeline.png"))
    bench.add_argument("--docs", type=Path, help="also write the table into this markdown file")
    bench.set_defaults(handler=cmd_pipeline)
    targets = bench.add_subparsers(dest="target", required=False)
    featurizer = targets.add_parser(
        "featurizer", help="the featurizer alone: events/s into vectors"
    )
    featurizer.add_argument("--events", type=int, default=100_000)
    featurizer.add_argument("--cards", type=int, default=10_000)
    featurizer.add_argument("--core", type=int, help="this CPU for the featurizer alone")
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
        "--set", action="append", default=[], metavar="STREAMML_SCORER_X=V", help="(repeatable)"
    )
    scorer.add_argument("--out", type=Path, default=Path(".streamml/bench/scorer.json"))
    scorer.set_defaults(handler=cmd_scorer)
    broker = targets.add_parser(
        "broker",
        help="the embedded broker's CPU per request: idle fetches, produce, transactions, "
        "catching up",
    )
    broker.add_argument("--seconds", type=float, default=5.0, help="length of each workload")
    broker.add_argument("--out", type=Path, default=Path(".streamml/bench/broker.json"))
    broker.set_defaults(handler=cmd_broker)
    floor = targets.add_parser(
        "floor",
        help="the latency floor of relays that do no work (two: the pipeline's hops), "
        "exactly-once against at-least-once: what no tuning of the services can take away",
    )
    floor.add_argument(
        "--relays", type=int, help="relays in series (default: the pipeline's two hops)"
    )
    floor.add_argument(
        "--publisher-linger-ms",
        type=int,
        help="the publisher's linger.ms (default: the load generator's of `streamml bench`)",
    )
    floor.add_argument("--rate", type=float, default=1000.0, help="records/s")
    floor.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    floor.add_argument("--warm-up-seconds", type=float, default=60.0)
    floor.add_argument("--rounds", type=int, default=2, help="pairs of runs")
    floor.add_argument("--out", type=Path, default=Path(".streamml/bench/floor.json"))
    floor.set_defaults(handler=cmd_floor)
    _register_long_runs(targets)


def _register_long_runs(targets: Any) -> None:
    soak = targets.add_parser(
        "soak",
        help="the pipeline at a steady rate for a long time: each process's RSS and CPU, "
        "consumer lag and latency percentiles every few seconds (JSON and PNG)",
    )
    soak.add_argument("--minutes", type=float, default=60.0)
    soak.add_argument("--rate", type=float, default=1000.0, help="events/s")
    soak.add_argument("--sample-seconds", type=float, default=5.0)
    soak.add_argument("--cards", type=int, default=10_000)
    soak.add_argument("--out", type=Path, default=Path(".streamml/bench/soak.json"))
    soak.set_defaults(handler=cmd_soak)
    fuzz = targets.add_parser(
        "fuzz", help="atheris on the Avro decoding and the HTTP bodies (v1 JSON, v2 inference)"
    )
    fuzz.add_argument("--target", choices=(*FUZZ_TARGETS, "all"), default="all")
    fuzz.add_argument("--seconds", type=int, default=600, help="per target")
    fuzz.add_argument("--findings", type=Path, default=Path(".streamml/fuzz"))
    fuzz.set_defaults(handler=cmd_fuzz)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from services.bench import pipeline_report

    pipeline_report.run_and_report(
        systems=[s.strip() for s in args.systems.split(",") if s.strip()],
        partitions=args.partitions,
        quick=args.quick,
        cards=args.cards,
        rates=[float(r) for r in args.rates.split(",")] if args.rates else None,
        step_seconds=args.step_seconds,
        service_settings=dict(_setting(item, "STREAMML_") for item in args.service_settings),
        warm_up_s=args.warm_up_seconds,
        json_path=args.json,
        plot_path=args.plot,
        docs_path=args.docs,
    )
    return 0


def cmd_featurizer(args: argparse.Namespace) -> int:
    from services.bench import featurizer

    result = featurizer.run(StackSettings(), events=args.events, cards=args.cards, core=args.core)
    report(result, args.out)
    return 0


def cmd_scorer(args: argparse.Namespace) -> int:
    from services.bench import scorer

    result = scorer.run(
        StackSettings(),
        events=args.events,
        cards=args.cards,
        rate=args.rate,
        latency_seconds=args.latency_seconds,
        scorer_settings=dict(_setting(item, "STREAMML_SCORER_") for item in args.set),
    )
    report(result, args.out)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from services.bench import broker

    result = broker.run(StackSettings(), seconds=args.seconds)
    report(result, args.out)
    print(broker.table(result))
    return 0


def cmd_floor(args: argparse.Namespace) -> int:
    from services.bench import floor

    result = floor.run(
        StackSettings(),
        rate=args.rate,
        seconds=args.seconds,
        warm_up_s=args.warm_up_seconds,
        rounds=args.rounds,
        relays=args.relays,
        publisher_linger_ms=args.publisher_linger_ms,
    )
    report(result, args.out)
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    from services.bench import soak

    soak.run_and_report(
        StackSettings(), args.minutes, args.rate, args.sample_seconds, args.cards, args.out
    )
    return 0


def cmd_fuzz(args: argparse.Namespace) -> int:
    from services.bench import fuzz

    return fuzz.run_targets(args.target, args.seconds, args.findings)


def _setting(item: str, prefix: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.startswith(prefix):
        raise ConfigError(f"--set wants {prefix}<NAME>=<value>, not {item!r}")
    return name, value
