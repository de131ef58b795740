"""``up``, ``down``, ``topics create``, ``features apply|get``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.core.domains import load_domain, load_domains
from services.core.kafka import create_topics, topic_specs
from services.core.settings import StackSettings, load_settings


def register(commands: Any) -> None:
    up = commands.add_parser(
        "up",
        help="start Apache Kafka (or the embedded broker) and Redis, create topics, apply Feast",
        description="Starts a broker (Apache Kafka with a JDK 17+, else the embedded one; "
        "STREAMML_BROKER=kafka|embedded|auto) and Redis, data under STREAMML_HOME. "
        "STREAMML_KAFKA_BOOTSTRAP / STREAMML_REDIS_URL: servers of your own, nothing started.",
    )
    up.add_argument("--detach", action="store_true", help="leave the stack running and exit 0")
    up.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="Kafka nodes (default 1); 3 gives a replicated cluster (replication factor 3, "
        "min.insync.replicas 2)",
    )
    up.add_argument("--kafka-port", type=int, help="first broker's port (default: a free one)")
    up.add_argument("--redis-port", type=int, help="Redis port (default: a free one)")
    up.add_argument(
        "--observability",
        action="store_true",
        help="also start Prometheus (Debian's package) scraping every streamml service "
        "started against this stack, with the alert rules of compose/alerts.yml",
    )
    up.add_argument("--prometheus-port", type=int, help="Prometheus's port (default: a free one)")
    up.set_defaults(handler=cmd_up)
    down = commands.add_parser("down", help="stop what `streamml up` started")
    down.add_argument(
        "--wipe",
        action="store_true",
        help="also delete the data kept for the next up (Kafka's topics, Redis, models, Feast)",
    )
    down.set_defaults(handler=cmd_down)

    topics = commands.add_parser("topics", help="topic administration")
    topic_commands = topics.add_subparsers(dest="action", required=True)
    topic_commands.add_parser("create", help="create every declared topic").set_defaults(
        handler=cmd_topics_create
    )

    features = commands.add_parser("features", help="the feature store")
    feature_commands = features.add_subparsers(dest="action", required=True)
    feature_commands.add_parser(
        "apply", help="register the declared features with Feast"
    ).set_defaults(handler=cmd_features_apply)
    get = feature_commands.add_parser("get", help="print one entity's online features as JSON")
    get.add_argument("domain")
    get.add_argument("entity", help="KEY_FIELD=VALUE, e.g. card_id=card-000001")
    get.set_defaults(handler=cmd_features_get)


def cmd_up(args: argparse.Namespace) -> int:
    from services.stack.up import up

    up(
        detach=args.detach,
        brokers=args.brokers,
        kafka_port=args.kafka_port,
        redis_port=args.redis_port,
        observability=args.observability,
        prometheus_port=args.prometheus_port,
    )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from services.stack.up import down

    down(wipe=args.wipe)
    return 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    settings = load_settings(StackSettings)
    domains = load_domains(settings.features_dir).values()
    created = create_topics(settings, topic_specs(settings, domains))
    print("created: " + (", ".join(created) or "nothing (every topic exists)"))
    return 0


def cmd_features_apply(args: argparse.Namespace) -> int:
    from services.featurestore.store import apply_declarations

    settings = load_settings(StackSettings)
    names = apply_declarations(settings, list(load_domains(settings.features_dir).values()))
    print("applied: " + ", ".join(names))
    return 0


def cmd_features_get(args: argparse.Namespace) -> int:
    from services.featurestore.store import online_row

    settings = load_settings(StackSettings)
    domain = load_domain(settings.features_dir, args.domain)
    print(json.dumps(online_row(settings, domain, args.entity), default=str))
    return 0
