"""``streamml up`` / ``down``: the local stack's lifecycle (a broker, Redis) and its ``stack.env``.

What ``up`` starts lives under ``<home>``: Kafka's data and Redis's snapshot survive ``down`` and
come back with the next ``up``; ``down --wipe`` deletes them.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import SecretStr

from services.core.domains import load_domains
from services.core.errors import StackError
from services.core.kafka import create_topics, topic_specs
from services.core.settings import ENV_PREFIX, STACK_ENV_FILE, StackSettings
from services.stack.brokers import client_config, start_broker
from services.stack.kafka.cluster import KAFKA_DIR, PID_DIR, forget_pids
from services.stack.processes import LOOPBACK, alive, port_for, stop_pids, stop_processes
from services.stack.redis_server import REDIS_DIR, start_redis

log = logging.getLogger(__name__)

STATE_FILE = "stack.json"
# A Kafka node's controlled shutdown (leadership handed over, logs closed) takes a few seconds.
KAFKA_STOP_TIMEOUT_S = 30.0
# What `down --wipe` deletes; the home folder may hold things of the user's, so only these.
WIPED = (KAFKA_DIR, PID_DIR, REDIS_DIR, "models", "feast", "logs")


@dataclass(frozen=True)
class StackState:
    """What ``up`` started, so that ``down`` can stop exactly that."""

    kafka_bootstrap: str
    redis_url: str
    broker_pids: tuple[int, ...]
    redis_pid: int | None
    broker: str
    embedded: bool
    prometheus_url: str | None = None  # `up --observability`
    prometheus_pid: int | None = None

    @property
    def pids(self) -> tuple[int, ...]:
        others = (self.redis_pid, self.prometheus_pid)
        return (*self.broker_pids, *(pid for pid in others if pid is not None))


def start_servers(
    settings: StackSettings,
    *,
    detach: bool,
    kafka_port: int | None = None,
    redis_port: int | None = None,
    brokers: int = 1,
) -> tuple[StackState, list[subprocess.Popen[bytes]]]:
    """Starts what the settings do not already name: the broker, Redis, or both."""
    logs = settings.home / "logs"
    started: list[subprocess.Popen[bytes]] = []
    try:
        bootstrap, broker_pids = settings.kafka_bootstrap, tuple[int, ...]()
        description, is_embedded = f"the Kafka cluster at {bootstrap}", settings.embedded
        if not bootstrap:
            broker = start_broker(settings, detach=detach, port=kafka_port, brokers=brokers)
            started += broker.processes
            bootstrap, description = broker.bootstrap, broker.description
            broker_pids, is_embedded = tuple(p.pid for p in broker.processes), broker.embedded
        redis_url, redis_pid = settings.redis_url, None
        url = redis_url.get_secret_value() if redis_url else None
        if not url:
            port = port_for(redis_port, "Redis")
            server = start_redis(port, settings.home / REDIS_DIR, logs / "redis.log", detach=detach)
            started.append(server)
            url, redis_pid = f"redis://{LOOPBACK}:{port}/0", server.pid
    except BaseException:
        stop_processes(started, KAFKA_STOP_TIMEOUT_S)
        raise
    state = StackState(bootstrap, url, broker_pids, redis_pid, description, is_embedded)
    return state, started


@contextmanager
def running_stack(settings: StackSettings, *, brokers: int = 1) -> Iterator[StackSettings]:
    """Starts what the settings do not name, prepares topics and Feast, stops it all after."""
    with running_servers(settings, brokers=brokers) as (connected_settings, _state):
        yield connected_settings


@contextmanager
def running_servers(
    settings: StackSettings, *, brokers: int = 1
) -> Iterator[tuple[StackSettings, StackState]]:
    """``running_stack``, also telling what it started (the benchmarks measure those pids)."""
    state, processes = start_servers(settings, detach=False, brokers=brokers)
    try:
        connected_settings = connected(settings, state)
        prepare(connected_settings)
        yield connected_settings, state
    finally:
        stop_started(settings.home, processes)


def stop_started(home: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    """Stops servers this process started (and still holds) and forgets their pid files."""
    stop_processes(processes, KAFKA_STOP_TIMEOUT_S)
    forget_pids(home)


def import_feast() -> None:
    """Imports what ``prepare`` needs of Feast (seconds of imports, best done meanwhile)."""
    import services.featurestore.store  # noqa: F401


def prepare(settings: StackSettings) -> None:
    """Creates every declared topic and applies the Feast declarations."""
    from services.featurestore.store import apply_declarations

    domains = list(load_domains(settings.features_dir).values())
    created = create_topics(settings, topic_specs(settings, domains))
    log.info("topics created: %s", ", ".join(created) or "none (all existed)")
    apply_declarations(settings, domains)


def connected(settings: StackSettings, state: StackState) -> StackSettings:
    """The settings with the stack's servers filled in."""
    return settings.model_copy(
        update={
            "kafka_client_config": client_config(settings),
            "kafka_bootstrap": state.kafka_bootstrap,
            "redis_url": SecretStr(state.redis_url),
            "embedded": state.embedded,
        }
    )


def write_state(settings: StackSettings, state: StackState) -> Path:
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / STATE_FILE).write_text(json.dumps(asdict(state)))
    lines = [
        f"{ENV_PREFIX}KAFKA_BOOTSTRAP={state.kafka_bootstrap}",
        f"{ENV_PREFIX}REDIS_URL={state.redis_url}",
        f"{ENV_PREFIX}EMBEDDED={'true' if state.embedded else 'false'}",
    ]
    config = client_config(settings)
    if config:  # the credentials the stack was started with: owner only
        lines.append(f"{ENV_PREFIX}KAFKA_CLIENT_CONFIG={json.dumps(config)}")
    settings.stack_env_path.touch(mode=0o600)
    settings.stack_env_path.write_text("\n".join(lines) + "\n")
    return settings.stack_env_path


def read_state(home: Path) -> StackState | None:
    try:
        raw = json.loads((home / STATE_FILE).read_text())
        raw["broker_pids"] = tuple(raw["broker_pids"])
        return StackState(**raw)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise StackError(
            f"{home / STATE_FILE} is unreadable ({exc!r}), perhaps left by an older streamml; "
            "stop what it started by hand, remove it and run up again"
        ) from exc


def running(state: StackState) -> bool:
    return any(alive(pid) for pid in state.pids)


def stop(home: Path, *, wipe: bool = False) -> StackState | None:
    """Stops what ``up`` started and forgets the stack; None when nothing was up. ``wipe``
    also deletes the data kept for the next ``up`` (Kafka's logs, Redis, models, Feast)."""
    state = read_state(home)
    if state is not None:
        left = stop_pids(list(state.pids), KAFKA_STOP_TIMEOUT_S)
        if left:
            raise StackError(
                f"processes {left} did not stop; kill them and remove {home / STATE_FILE}"
            )
        for name in (STATE_FILE, STACK_ENV_FILE):
            (home / name).unlink(missing_ok=True)
        forget_pids(home)
    if wipe:
        for name in WIPED:
            shutil.rmtree(home / name, ignore_errors=True)
    return state
