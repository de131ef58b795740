"""``python -m services.bench.peer --home H --model M --model-version V``: one faust worker.

Settings (broker, Redis, schemas, features) come from the ``STREAMML_*`` environment, as for
every service; the runner (``runner.py``) starts this as a child process.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import faust

from services.bench.peer.app import PeerConfig, build_app
from services.core.settings import load_settings
from services.scorer.settings import ScorerSettings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.bench.peer", description=__doc__)
    parser.add_argument("--home", type=Path, required=True, help="the peer's files and logs")
    parser.add_argument("--model", type=Path, required=True, help="the ONNX file to serve")
    parser.add_argument("--model-version", required=True, help="written on every prediction")
    args = parser.parse_args(argv)
    config = PeerConfig(args.home.resolve(), args.model.resolve(), args.model_version)
    # Feast logs a registry refresh at INFO on every push; our services quiet it the same way.
    logging.getLogger("feast").setLevel(logging.WARNING)
    app = build_app(load_settings(ScorerSettings), config)
    faust.Worker(app, loglevel="INFO", redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
