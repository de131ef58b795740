"""``streamml up`` / ``down``: the embedded stack's lifecycle and its ``stack.env``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import SecretStr

from services.core.domains import load_domains
from services.core.errors import StackError
from services.core.kafka import create_topics, topic_specs
from services.core.settings import ENV_PREFIX, StackSettings
from services.features.store import apply_declarations
from services.stack.broker import start_broker
from services.stack.processes import LOOPBACK, ensure_port_free, free_port, stop_pid
from services.stack.redis_server import start_redis

log = logging.getLogger(__name__)

STATE_FILE = "stack.json"


@dataclass(frozen=True)
class StackState:
    """What ``up`` started, so that ``down`` can stop exactly that."""

    kafka_bootstrap: str
    redis_url: str
    broker_pid: int | None
    redis_pid: int | None

    @property
    def embedded(self) -> bool:
        return self.broker_pid is not None


def start_servers(
    settings: StackSettings,
    *,
    detach: bool,
    kafka_port: int | None = None,
    redis_port: int | None = None,
) -> tuple[StackState, list[subprocess.Popen[bytes]]]:
    """Starts what the settings do not already name: the broker, Redis, or both."""
    logs = settings.home / "logs"
    started: list[subprocess.Popen[bytes]] = []
    try:
        bootstrap, broker_pid = settings.kafka_bootstrap, None
        if not bootstrap:
            port = _port(kafka_port, "broker")
            broker = start_broker(port, logs / "broker.log", detach=detach)
            started.append(broker)
            bootstrap, broker_pid = f"{LOOPBACK}:{port}", broker.pid
        redis_url, redis_pid = settings.redis_url, None
        url = redis_url.get_secret_value() if redis_url else None
        if not url:
            port = _port(redis_port, "Redis")
            server = start_redis(port, settings.home / "redis", logs / "redis.log", detach=detach)
            started.append(server)
            url, redis_pid = f"redis://{LOOPBACK}:{port}/0", server.pid
    except BaseException:
        for process in started:
            stop_pid(process.pid)
        raise
    return StackState(bootstrap, url, broker_pid, redis_pid), started


@contextmanager
def running_stack(settings: StackSettings) -> Iterator[StackSettings]:
    """Starts what the settings do not name, prepares topics and Feast, stops it all after."""
    with running_servers(settings) as (connected_settings, _state):
        yield connected_settings


@contextmanager
def running_servers(settings: StackSettings) -> Iterator[tuple[StackSettings, StackState]]:
    """``running_stack``, also telling what it started (the benchmarks measure those pids)."""
    state, processes = start_servers(settings, detach=False)
    try:
        connected_settings = connected(settings, state)
        prepare(connected_settings)
        yield connected_settings, state
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def prepare(settings: StackSettings) -> None:
    """Creates every declared topic and applies the Feast declarations."""
    domains = list(load_domains(settings.features_dir).values())
    created = create_topics(settings, topic_specs(settings, domains))
    log.info("topics created: %s", ", ".join(created) or "none (all existed)")
    apply_declarations(settings, domains)


def connected(settings: StackSettings, state: StackState) -> StackSettings:
    """The settings with the stack's servers filled in."""
    return settings.model_copy(
        update={
            "kafka_bootstrap": state.kafka_bootstrap,
            "redis_url": SecretStr(state.redis_url),
            "embedded": settings.embedded or state.embedded,
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
    settings.stack_env_path.write_text("\n".join(lines) + "\n")
    return settings.stack_env_path


def read_state(home: Path) -> StackState | None:
    try:
        return StackState(**json.loads((home / STATE_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise StackError(
            f"{home / STATE_FILE} is unreadable ({exc}); remove it and run up again"
        ) from exc


def running(state: StackState) -> bool:
    return any(pid is not None and _alive(pid) for pid in (state.broker_pid, state.redis_pid))


def stop(home: Path) -> StackState | None:
    """Stops what ``up`` started and forgets the stack; None when nothing was up."""
    state = read_state(home)
    if state is None:
        return None
    for pid in (state.broker_pid, state.redis_pid):
        if pid is not None and not stop_pid(pid):
            raise StackError(f"process {pid} did not stop; kill it and remove {home / STATE_FILE}")
    for name in (STATE_FILE, "stack.env"):
        (home / name).unlink(missing_ok=True)
    return state


def _port(requested: int | None, what: str) -> int:
    if requested is None:
        return free_port()
    ensure_port_free(requested, what)
    return requested


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
