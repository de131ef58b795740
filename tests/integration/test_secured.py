"""A secured stack of its own: Apache Kafka with SASL/SCRAM over TLS (SASL_SSL) on its brokers'
listener, started for the user the clients are configured with (``STREAMML_KAFKA_CLIENT_CONFIG``
by librdkafka's names) and with a certificate the stack makes, and a Redis that requires a
password (given in the URL). The services run with the credentials and the events come out as
predictions; clients without them, with a wrong password, without TLS or without the
certificate are refused; no secret appears in any log or metrics page."""

from __future__ import annotations

import secrets
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from services.core.domains import load_domain
from services.core.kafka import consumer_config
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.producer.publish import publish_synthetic
from services.stack import local
from services.stack.processes import free_port, stop_processes
from services.stack.redis_server import REDIS_DIR, start_redis
from services.stack.services import ServiceProcess, service_env

pytestmark = pytest.mark.integration

USER = "streamml-test"
EVENTS = 500


@dataclass
class Secured:
    settings: StackSettings
    kafka_password: str
    redis_password: str
    logs: Path
    ports: dict[str, int]

    def client(self, *, without: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
        config: dict[str, Any] = {"bootstrap.servers": self.settings.bootstrap}
        config |= self.settings.kafka_client_config | changes
        return {k: v for k, v in config.items() if k not in without}

    @property
    def keystore_password(self) -> str:
        return (self.settings.home / "kafka" / "tls" / "password").read_text().strip()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    home = tmp_path_factory.mktemp("secured-home")
    kafka_password, redis_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    redis_port = free_port()
    redis_server = start_redis(
        redis_port, home / REDIS_DIR, home / "logs" / "redis.log", detach=False,
        password=redis_password,
    )  # fmt: skip
    base = StackSettings(
        home=home,
        kafka_bootstrap=None,
        redis_url=SecretStr(f"redis://:{redis_password}@127.0.0.1:{redis_port}/0"),
        broker="kafka",
        kafka_client_config={
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": USER,
            "sasl.password": kafka_password,
        },
    )
    services: list[ServiceProcess] = []
    try:
        with local.running_stack(base) as settings:
            ports = {"featurizer": free_port(), "scorer": free_port()}
            for name, port in ports.items():
                env = service_env(settings, {"STREAMML_METRICS_PORT": str(port)})
                services.append(ServiceProcess(name, env, home / "logs" / f"{name}.log"))
            yield Secured(settings, kafka_password, redis_password, home / "logs", ports)
            for service in services:
                assert service.stop() == 0, service.log_path.read_text()[-3000:]
    finally:
        for service in services:
            if service.process.poll() is None:
                service.kill()
        stop_processes([redis_server], 30.0)


def test_the_services_work_with_the_credentials(secured: Secured) -> None:
    settings = secured.settings
    domain = load_domain(settings.features_dir, "payments")
    codecs = codecs_for(settings)
    sent = set(
        publish_synthetic(
            settings, domain, codecs.for_topic(domain.topics.events), count=EVENTS, rate=0, seed=3
        )
    )
    codec = codecs.for_topic(domain.topics.predictions)
    consumer = Consumer(consumer_config(settings, f"secured-reader-{secrets.token_hex(4)}"))
    consumer.subscribe([domain.topics.predictions])
    predicted: set[str] = set()
    deadline = time.monotonic() + 120
    try:
        while predicted < sent and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    predicted.add(str(codec.decode(message.value())["event_id"]))
    finally:
        consumer.close()
    assert predicted >= sent, f"{len(sent - predicted)} of {len(sent)} events not predicted"


def test_the_brokers_listener_speaks_tls_with_the_stacks_certificate(secured: Secured) -> None:
    ca = secured.settings.kafka_client_config["ssl.ca.location"]
    host, port = secured.settings.bootstrap.split(",")[0].rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        names = [value for _, value in tls.getpeercert()["subjectAltName"]]
        assert "127.0.0.1" in names


@pytest.mark.parametrize(
    ("changes", "without"),
    [
        ({"security.protocol": "PLAINTEXT"}, ()),  # no credentials, no TLS
        ({"security.protocol": "SASL_PLAINTEXT"}, ()),  # the credentials, without TLS
        ({"sasl.password": "not-the-password"}, ()),
        ({}, ("ssl.ca.location",)),  # TLS, but not trusting the stack's certificate
    ],
    ids=["without credentials", "without tls", "wrong password", "without the certificate"],
)
def test_clients_without_the_credentials_are_refused(
    secured: Secured, changes: dict[str, str], without: tuple[str, ...]
) -> None:
    errors: list[str] = []
    config = secured.client(without=without, **changes, error_cb=lambda e: errors.append(str(e)))
    admin = AdminClient(config)
    with pytest.raises(KafkaException) as refused:
        admin.list_topics(timeout=5)
    admin.poll(2)  # the client's error callbacks are served here
    if "sasl.password" in changes:  # told why, not just timed out
        said = [str(refused.value), *errors]
        assert any("uthentication" in text for text in said), said


def test_redis_refuses_a_client_without_the_password(secured: Secured) -> None:
    url = secured.settings.redis
    without = url.replace(f":{secured.redis_password}@", "")
    with pytest.raises(redis.AuthenticationError), redis.Redis.from_url(without) as client:
        client.get("anything")
    with redis.Redis.from_url(url) as client:
        assert client.ping()


def test_no_secret_appears_in_any_log_or_metrics_page(secured: Secured) -> None:
    pages = [
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for port in secured.ports.values()
    ]
    logs = [path.read_text(errors="replace") for path in secured.logs.glob("*.log")]
    assert len(logs) >= 3  # the services', the broker's, Redis's
    for secret in (secured.kafka_password, secured.redis_password, secured.keystore_password):
        for text in pages + logs:
            assert secret not in text
