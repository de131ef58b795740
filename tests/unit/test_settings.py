"""Settings: environment first, the embedded stack's stack.env otherwise; secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from services.core.errors import ConfigError
from services.core.settings import (
    EMBEDDED_BATCH_WAIT_MS,
    EMBEDDED_FETCH_WAIT_MS,
    EMBEDDED_SESSION_TIMEOUT_MS,
    KAFKA_FETCH_WAIT_MS,
    KAFKA_SESSION_TIMEOUT_MS,
    StackSettings,
    load_settings,
)
from services.featurestore.store import feast_redis_connection

FILE_BOOTSTRAP = "127.0.0.1:19092"
FILE_REDIS = "redis://127.0.0.1:16379/0"


@pytest.fixture
def home(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A STREAMML_HOME whose stack.env is what `streamml up` writes."""
    home = clean_env / "state"
    home.mkdir()
    (home / "stack.env").write_text(
        f"STREAMML_KAFKA_BOOTSTRAP={FILE_BOOTSTRAP}\n"
        f"STREAMML_REDIS_URL={FILE_REDIS}\n"
        "STREAMML_EMBEDDED=true\n"
    )
    monkeypatch.setenv("STREAMML_HOME", str(home))
    return home


def test_stack_env_is_read_when_no_servers_are_named(home: Path) -> None:
    settings: StackSettings = load_settings(StackSettings)
    assert settings.home == home
    assert settings.bootstrap == FILE_BOOTSTRAP
    assert settings.redis == FILE_REDIS
    assert settings.embedded is True
    assert settings.session_timeout == EMBEDDED_SESSION_TIMEOUT_MS
    assert settings.fetch_wait == EMBEDDED_FETCH_WAIT_MS


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STREAMML_KAFKA_BOOTSTRAP", "kafka.example:9092"),
        ("STREAMML_REDIS_URL", "redis://redis.example:6379/2"),
    ],
)
def test_a_named_server_makes_the_file_ignored_entirely(
    home: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    settings: StackSettings = load_settings(StackSettings)
    assert settings.embedded is False
    assert settings.session_timeout == KAFKA_SESSION_TIMEOUT_MS
    assert settings.fetch_wait == KAFKA_FETCH_WAIT_MS
    if variable == "STREAMML_KAFKA_BOOTSTRAP":
        assert settings.bootstrap == value
        assert settings.redis_url is None  # not FILE_REDIS
    else:
        assert settings.redis == value
        assert settings.kafka_bootstrap is None  # not FILE_BOOTSTRAP


def test_without_a_stack_env_nothing_is_embedded(clean_env: Path) -> None:
    settings: StackSettings = load_settings(StackSettings)
    assert settings.home == Path(".streamml")
    assert settings.kafka_bootstrap is None and settings.redis_url is None
    assert settings.embedded is False
    assert settings.session_timeout == KAFKA_SESSION_TIMEOUT_MS
    assert settings.fetch_wait == KAFKA_FETCH_WAIT_MS


def test_explicit_timings_override_the_embedded_ones(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMML_FETCH_WAIT_MS", "250")
    monkeypatch.setenv("STREAMML_SESSION_TIMEOUT_MS", "12000")
    settings: StackSettings = load_settings(StackSettings)
    assert settings.embedded is True
    assert settings.fetch_wait == 250
    assert settings.session_timeout == 12_000


def test_explicit_zero_fetch_wait_is_kept(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMML_KAFKA_BOOTSTRAP", "k:1")
    monkeypatch.setenv("STREAMML_FETCH_WAIT_MS", "0")
    assert load_settings(StackSettings).fetch_wait == 0


def test_a_service_settings_class_reads_the_same_sources(home: Path) -> None:
    class ServiceSettings(StackSettings):
        batch_size: int = 10

    settings = load_settings(ServiceSettings)
    assert isinstance(settings, ServiceSettings)
    assert settings.batch_size == 10
    assert settings.bootstrap == FILE_BOOTSTRAP
    assert settings.embedded is True


@pytest.mark.parametrize("attribute", ["bootstrap", "redis"])
def test_missing_servers_say_to_run_streamml_up(clean_env: Path, attribute: str) -> None:
    settings: StackSettings = load_settings(StackSettings)
    with pytest.raises(ConfigError, match="streamml up"):
        getattr(settings, attribute)


def test_the_redis_password_stays_out_of_reprs(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "redis://:hunter2pw@redis.example:1/0"
    monkeypatch.setenv("STREAMML_REDIS_URL", url)
    settings: StackSettings = load_settings(StackSettings)
    assert isinstance(settings.redis_url, SecretStr)
    assert "hunter2pw" not in repr(settings)
    assert "hunter2pw" not in str(settings)
    assert "hunter2pw" not in settings.model_dump_json()
    assert settings.redis == url


def test_settings_are_frozen(clean_env: Path) -> None:
    settings = StackSettings()
    with pytest.raises(ValueError, match="frozen"):
        settings.topic_partitions = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:1/0", "h:1,db=0"),
        ("redis://h:1", "h:1"),
        ("redis://h/3", "h:6379,db=3"),
        ("redis://:pw@h:1/0", "h:1,db=0,password=pw"),
        ("redis://user:pw@h:1/0", "h:1,db=0,password=pw"),
        ("rediss://h:1/0", "h:1,db=0,ssl=true"),
        ("rediss://:pw@h:1/2", "h:1,db=2,password=pw,ssl=true"),
    ],
)
def test_feast_redis_connection(url: str, expected: str) -> None:
    assert feast_redis_connection(url) == expected


@pytest.mark.parametrize("url", ["http://h:1/0", "unix:///tmp/redis.sock", "h:1", "redis://"])
def test_feast_redis_connection_refuses_other_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="redis://"):
        feast_redis_connection(url)


def test_each_host_gets_its_own_transactional_ids_by_default(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas scaled from one compose service share their settings, not their host names."""
    import socket

    from services.featurizer.settings import FeaturizerSettings
    from services.scorer.settings import ScorerSettings

    monkeypatch.setattr(socket, "gethostname", lambda: "replica-7")
    assert FeaturizerSettings().featurizer_instance == "replica-7"
    assert ScorerSettings().scorer_instance == "replica-7"
    monkeypatch.setenv("STREAMML_FEATURIZER_INSTANCE", "a/b")
    with pytest.raises(ValueError, match="featurizer_instance"):
        FeaturizerSettings()


def test_child_services_get_the_fetch_wait_and_session_timeout_their_parent_chose(
    clean_env: Path,
) -> None:
    from services.stack.services import service_env

    chosen = StackSettings(
        home=clean_env,
        kafka_bootstrap="127.0.0.1:9092",
        redis_url=SecretStr("redis://127.0.0.1:6379/0"),
        fetch_wait_ms=20,
        session_timeout_ms=9_000,
    )
    env = service_env(chosen)
    assert env["STREAMML_FETCH_WAIT_MS"] == "20"
    assert env["STREAMML_SESSION_TIMEOUT_MS"] == "9000"
    defaults = service_env(chosen.model_copy(update={"fetch_wait_ms": None}))
    assert "STREAMML_FETCH_WAIT_MS" not in defaults  # the child picks its own default


def test_micro_batches_wait_only_on_the_embedded_broker_unless_configured() -> None:
    kafka = StackSettings(kafka_bootstrap="127.0.0.1:1", embedded=False)
    embedded = StackSettings(kafka_bootstrap="127.0.0.1:1", embedded=True)
    assert kafka.batch_wait(None) == 0
    assert embedded.batch_wait(None) == EMBEDDED_BATCH_WAIT_MS > 0
    assert kafka.batch_wait(7) == embedded.batch_wait(7) == 7


def test_sasl_and_tls_settings_reach_every_client_by_their_librdkafka_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.core.kafka import client_config, consumer_config, producer_config

    monkeypatch.setenv("STREAMML_KAFKA_BOOTSTRAP", "kafka.example:9093")
    monkeypatch.setenv(
        "STREAMML_KAFKA_CLIENT_CONFIG",
        '{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", '
        '"sasl.username": "svc", "sasl.password": "hunter2", "ssl.ca.location": "/ca.pem"}',
    )
    settings = StackSettings()
    for config in (
        client_config(settings),
        consumer_config(settings, "g"),
        producer_config(settings),
    ):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.password"] == "hunter2"
        assert config["ssl.ca.location"] == "/ca.pem"
        assert config["bootstrap.servers"] == "kafka.example:9093"
    assert "hunter2" not in repr(settings)
