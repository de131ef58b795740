"""Typed settings: the only place that reads the environment.

Every command resolves the stack the same way: when ``STREAMML_KAFKA_BOOTSTRAP`` or
``STREAMML_REDIS_URL`` is set, those servers are used and nothing embedded is involved;
otherwise the connection settings come from ``<home>/stack.env``, written by ``streamml up``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.errors import ConfigError
from services.core.paths import default_features_dir, default_schemas_dir

ENV_PREFIX = "STREAMML_"
STACK_ENV_FILE = "stack.env"
_EXPLICIT_SERVER_VARS = (f"{ENV_PREFIX}KAFKA_BOOTSTRAP", f"{ENV_PREFIX}REDIS_URL")

# Consumer timings. The embedded broker (Tansu) makes a group join take about half the
# session timeout and answers a fetch only when its whole max-wait has passed, so embedded
# mode uses a short session timeout and a fetch wait of a few ms (docs/operations.md).
EMBEDDED_SESSION_TIMEOUT_MS = 6_000
EMBEDDED_FETCH_WAIT_MS = 2
# On Kafka a consumer that dies holds its partitions until its session times out; librdkafka's
# 45 s default would stop a partition that long after a crash.
KAFKA_SESSION_TIMEOUT_MS = 10_000
KAFKA_FETCH_WAIT_MS = 100
# Consumers off the hot path (the model registry follower, online learning's outcome reader,
# the feature log) never fetch more often than this: on the embedded broker every fetcher at
# 2 ms costs the broker about an eighth of a core even when idle (`streamml bench broker`).
BACKGROUND_FETCH_WAIT_MS = 100
# Readers of a partition's history (the featurizer's changelog restore, the scorer's rebuild of
# recent predictions) fetch at least this long. The embedded broker lists every stored batch
# of a partition in each fetch, and a fetch whose work outlasts its wait comes back empty: at
# 2 ms a partition of a few thousand small batches can no longer be read (`streamml bench
# broker`).
HISTORY_FETCH_WAIT_MS = 100
# How long a service's micro-batch waits to fill. On Kafka, none: a batch is what was fetched,
# and what arrives while it commits is the next one, so batches grow with the load by
# themselves (at 1,000 events/s, 5 ms waits gave p50 92-100 ms end to end, none 61-73 ms;
# `streamml bench`, docs/benchmarks.md). On the embedded broker each transaction costs it
# CPU and stored batches, so batches wait a little to be fuller.
KAFKA_BATCH_WAIT_MS = 0
EMBEDDED_BATCH_WAIT_MS = 5


BrokerChoice = Literal["auto", "kafka", "embedded"]


def default_cache_dir() -> Path:
    """Downloads kept between checkouts (Kafka's jars): ``$XDG_CACHE_HOME/streamml``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamml"


class StackSettings(BaseSettings):
    """Where the broker, Redis, schemas, features and models are; shared by every service."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    home: Path = Field(default=Path(".streamml"), description="State folder: stack.env, models")
    kafka_bootstrap: str | None = Field(default=None, description="host:port[,host:port]")
    redis_url: SecretStr | None = Field(default=None, description="redis://host:port/db")
    schema_registry_url: str | None = Field(
        default=None, description="Confluent Schema Registry; unset means single-object Avro"
    )
    embedded: bool = Field(default=False, description="Set by `streamml up` in stack.env")
    broker: BrokerChoice = Field(
        default="auto",
        description="What `streamml up` starts: kafka (Apache Kafka, needs a JDK 17+), "
        "embedded (Tansu, memory only), auto (Kafka when a JDK is found)",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir, description="Kafka's jars, fetched once"
    )
    java_home: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("STREAMML_JAVA_HOME", "JAVA_HOME"),
        description="The JDK that runs Kafka; default: java on PATH",
    )
    maven_repository: str | None = Field(
        default=None, description="A Maven Central mirror to fetch Kafka's jars from"
    )
    kafka_heap_mb: int = Field(
        default=512, ge=128, description="Heap of each local Kafka node (JVM -Xmx)"
    )
    kafka_jvm_options: str = Field(
        default="", description="More JVM options for each local Kafka node (as KAFKA_OPTS)"
    )
    schemas_dir: Path = Field(default_factory=default_schemas_dir)
    features_dir: Path = Field(default_factory=default_features_dir)
    model_store_dir: Path | None = Field(default=None, description="Default: <home>/models")
    topic_partitions: int = Field(default=4, ge=1, description="Partitions of every data topic")
    topic_replication: int = Field(
        default=-1,
        ge=-1,
        description="Replication factor of the topics streamml creates; -1: the cluster's "
        "default.replication.factor (3 on `streamml up --brokers 3`)",
    )
    session_timeout_ms: int | None = Field(default=None, ge=1_000)
    fetch_wait_ms: int | None = Field(default=None, ge=0)
    kafka_client_config: dict[str, str] = Field(
        default_factory=dict,
        repr=False,  # may hold sasl.password
        description="More librdkafka settings for every Kafka client, by their librdkafka "
        'names, as JSON: {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", ...}',
    )
    kafka_debug: str | None = Field(
        default=None, description="librdkafka debug contexts for every client, e.g. cgrp,eos"
    )
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    metrics_host: str = Field(default="127.0.0.1", description="0.0.0.0 to be scraped from outside")

    @property
    def bootstrap(self) -> str:
        if not self.kafka_bootstrap:
            raise ConfigError(
                "no Kafka to talk to: run `streamml up --detach` for the embedded stack, "
                "or set STREAMML_KAFKA_BOOTSTRAP=host:port"
            )
        return self.kafka_bootstrap

    @property
    def redis(self) -> str:
        if self.redis_url is None:
            raise ConfigError(
                "no Redis to talk to: run `streamml up --detach` for the embedded stack, "
                "or set STREAMML_REDIS_URL=redis://host:port/0"
            )
        return self.redis_url.get_secret_value()

    @property
    def session_timeout(self) -> int:
        if self.session_timeout_ms is not None:
            return self.session_timeout_ms
        return EMBEDDED_SESSION_TIMEOUT_MS if self.embedded else KAFKA_SESSION_TIMEOUT_MS

    @property
    def fetch_wait(self) -> int:
        if self.fetch_wait_ms is not None:
            return self.fetch_wait_ms
        return EMBEDDED_FETCH_WAIT_MS if self.embedded else KAFKA_FETCH_WAIT_MS

    def batch_wait(self, configured_ms: int | None) -> int:
        """A service's micro-batch wait: the configured one, else the broker's default."""
        if configured_ms is not None:
            return configured_ms
        return EMBEDDED_BATCH_WAIT_MS if self.embedded else KAFKA_BATCH_WAIT_MS

    @property
    def models_dir(self) -> Path:
        return self.model_store_dir or self.home / "models"

    @property
    def datasets_dir(self) -> Path:
        """Training datasets built from history, one folder each (``streamml train``)."""
        return self.home / "datasets"

    @property
    def stack_env_path(self) -> Path:
        return self.home / STACK_ENV_FILE


S = TypeVar("S", bound=StackSettings)


def servers_named_in_environment() -> bool:
    """True when the user points streamml at servers of their own."""
    return any(os.environ.get(name) for name in _EXPLICIT_SERVER_VARS)


def load_settings(cls: type[S]) -> S:
    """Settings from the environment, falling back to the embedded stack's ``stack.env``."""
    if servers_named_in_environment():
        return cls()
    home = Path(os.environ.get(f"{ENV_PREFIX}HOME", ".streamml"))
    return cls(_env_file=home / STACK_ENV_FILE)


def host_name() -> str:
    """This machine's (or container's) name: the default name of a service instance."""
    return socket.gethostname()
