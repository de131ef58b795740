"""``streamml``: the command line. Each subcommand lives in the module named after it."""

from __future__ import annotations

import signal
import sys

if sys.argv[1:2] == ["run"]:
    # A service SIGTERMed while it still imports and connects has no batch to finish: it exits 0
    # (set before any import below, which takes seconds on a busy machine). Each service puts
    # its own handler in place when it starts.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

import argparse
import logging
from collections.abc import Sequence

from services.core.errors import StreamMLError

from . import (
    bench,
    data,
    demo,
    featurelog,
    models,
    monitor,
    run,
    schemas,
    score_batch,
    stack,
    status,
)

_MODULES = (
    stack,
    status,
    run,
    data,
    models,
    score_batch,
    monitor,
    bench,
    schemas,
    featurelog,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamml",
        description="Event-driven streaming ML. Settings come from STREAMML_* variables, "
        "else from .streamml/stack.env written by `streamml up`.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("feast", "faust", "mode", "aiokafka", "urllib3", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code: int = args.handler(args)
    except StreamMLError as exc:
        print(f"streamml: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
