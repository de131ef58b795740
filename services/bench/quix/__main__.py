"""``python -m services.bench.quix --home H --model M --model-version V``: the Quix Streams peer.

Run with the peer's own interpreter (``venv.py``) and the repository on ``PYTHONPATH``;
settings (broker, Redis, schemas, features) come from the ``STREAMML_*`` environment, as for
every service. ``runner.py`` starts it so.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
from collections.abc import Sequence
from pathlib import Path

from services.bench.quix.app import QuixConfig, build_app
from services.core.settings import load_settings
from services.scorer.settings import ScorerSettings

DEFAULT_COMMIT_INTERVAL_S = 0.1


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.bench.quix", description=__doc__)
    parser.add_argument("--home", type=Path, required=True, help="the peer's files and state")
    parser.add_argument("--model", type=Path, required=True, help="the ONNX file to serve")
    parser.add_argument("--model-version", required=True, help="written on every prediction")
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=DEFAULT_COMMIT_INTERVAL_S,
        help="seconds between Quix checkpoints (its default is 5; outputs wait for them)",
    )
    parser.add_argument(
        "--profile", type=Path, help="run under cProfile and write its stats here when it stops"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("feast").setLevel(logging.WARNING)
    config = QuixConfig(
        args.home.resolve(), args.model.resolve(), args.model_version, args.commit_interval
    )
    app = build_app(load_settings(ScorerSettings), config)
    if args.profile is None:
        app.run()
        return
    profiler = cProfile.Profile()
    try:
        profiler.runcall(app.run)
    finally:
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
