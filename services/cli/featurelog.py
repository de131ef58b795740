"""``feature-log run``: the feature log sink, ``<domain>.features`` into the Feast offline store."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from prometheus_client import CollectorRegistry

from services.core.domains import load_domain
from services.core.metrics import serve_metrics
from services.core.settings import load_settings

log = logging.getLogger(__name__)


def register(commands: Any) -> None:
    feature_log = commands.add_parser(
        "feature-log", help="the feature log: feature vectors as parquet for training"
    )
    actions = feature_log.add_subparsers(dest="action", required=True)
    run = actions.add_parser(
        "run",
        help="<domain>.features -> parquet part files in the Feast offline store "
        "(foreground; SIGTERM writes the current batch and stops)",
    )
    run.add_argument("--domain", default="payments")
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from services.cli.run import codecs_for
    from services.featurelog.settings import FeatureLogSettings
    from services.featurelog.sink import FeatureLogSink

    settings = load_settings(FeatureLogSettings)
    domain = load_domain(settings.features_dir, args.domain)
    registry = CollectorRegistry()
    port = serve_metrics(registry, settings.metrics_port, host=settings.metrics_host)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    sink = FeatureLogSink(settings, domain, codecs_for(settings), registry)
    sink.install_signal_handlers()
    sink.run()
    return 0
