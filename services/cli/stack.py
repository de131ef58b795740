"""``up``, ``down``, ``topics create``, ``features apply|get``."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from typing import Any

from services.core.domains import load_domain, load_domains
from services.core.errors import StackError
from services.core.kafka import create_topics, topic_specs
from services.core.settings import StackSettings, load_settings
from services.stack import local


def register(commands: Any) -> None:
    up = commands.add_parser(
        "up",
        help="start Apache Kafka (or the embedded broker) and Redis, create topics, apply Feast",
        description="Starts a local broker and Redis with their data under STREAMML_HOME "
        "(.streamml). The broker is Apache Kafka when a JDK 17+ is found (its jars are fetched "
        "from Maven Central once), else the embedded one; STREAMML_BROKER=kafka|embedded|auto "
        "chooses. STREAMML_KAFKA_BOOTSTRAP / STREAMML_REDIS_URL name servers of your own, and "
        "then nothing of that kind starts.",
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


def _plain_settings() -> StackSettings:
    """Settings for `up`: servers only from the environment, never from an old stack.env."""
    return StackSettings()


def cmd_up(args: argparse.Namespace) -> int:
    settings = _plain_settings()
    previous = local.read_state(settings.home)
    if previous is not None and local.running(previous):
        raise StackError(
            f"a stack is already up (Kafka {previous.kafka_bootstrap}, {previous.redis_url}); "
            "run `streamml down` first"
        )
    # Feast takes seconds to import: that happens while the servers start.
    threading.Thread(target=local.import_feast, name="import-feast", daemon=True).start()
    state, processes = local.start_servers(
        settings,
        detach=args.detach,
        kafka_port=args.kafka_port,
        redis_port=args.redis_port,
        brokers=args.brokers,
    )
    try:
        local.prepare(local.connected(settings, state))
        env_path = local.write_state(settings, state)
    except BaseException:
        local.stop_started(settings.home, processes)
        raise
    print(f"broker {state.broker}\nKafka  {state.kafka_bootstrap}")
    print(f"Redis  {state.redis_url}\nwrote  {env_path}")
    if args.detach:
        return 0
    print("stack up; Ctrl-C stops it", file=sys.stderr)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    local.stop(settings.home)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    home = _plain_settings().home
    state = local.stop(home, wipe=args.wipe)
    print("stack stopped" if state is not None else "no stack was up")
    if args.wipe:
        print(f"deleted the stack's data under {home}")
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
    from services.featurestore.feast_objects import feature_view_name
    from services.featurestore.store import open_store

    settings = load_settings(StackSettings)
    domain = load_domain(settings.features_dir, args.domain)
    field, _, value = args.entity.partition("=")
    entity = next((e for e in domain.entities if e.key_field == field), None)
    if entity is None or not value:
        keys = ", ".join(e.key_field for e in domain.entities)
        raise StackError(f"expected KEY_FIELD=VALUE with one of: {keys}")
    view = feature_view_name(domain, entity.name)
    refs = [f"{view}:{f.name}" for f in domain.features_of(entity.name)]
    response = open_store(settings).get_online_features(features=refs, entity_rows=[{field: value}])
    row = {k: v[0] for k, v in response.to_dict().items()}
    print(json.dumps(row, default=str))
    return 0
