"""``streamml up``: the local stack started, prepared, its address written; in the foreground
it runs until Ctrl-C or SIGTERM and then stops what it started."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading

from services.core.errors import StackError
from services.core.settings import StackSettings
from services.stack import local
from services.stack.prometheus import start_prometheus


def up(
    *,
    detach: bool,
    brokers: int,
    kafka_port: int | None,
    redis_port: int | None,
    observability: bool = False,
    prometheus_port: int | None = None,
) -> StackSettings:
    """Starts the stack (servers only from the environment, never from an old stack.env)
    and returns once it is ready, or, without ``detach``, once it has been stopped.
    ``observability``: Prometheus too, scraping every service started against the stack."""
    settings = StackSettings()
    previous = local.read_state(settings.home)
    if previous is not None and local.running(previous):
        raise StackError(
            f"a stack is already up (Kafka {previous.kafka_bootstrap}, {previous.redis_url}); "
            "run `streamml down` first"
        )
    # Feast takes seconds to import: that happens while the servers start.
    threading.Thread(target=local.import_feast, name="import-feast", daemon=True).start()
    state, processes = local.start_servers(
        settings, detach=detach, kafka_port=kafka_port, redis_port=redis_port, brokers=brokers
    )
    try:
        local.prepare(local.connected(settings, state))
        if observability:
            log_path = settings.home / "logs" / "prometheus.log"
            server, url = start_prometheus(settings.home, prometheus_port, log_path, detach=detach)
            processes.append(server)
            state = dataclasses.replace(state, prometheus_url=url, prometheus_pid=server.pid)
        env_path = local.write_state(settings, state)
    except BaseException:
        local.stop_started(settings.home, processes)
        raise
    print(f"broker {state.broker}\nKafka  {state.kafka_bootstrap}")
    print(f"Redis  {state.redis_url}\nwrote  {env_path}")
    if state.prometheus_url:
        print(
            f"Prometheus {state.prometheus_url} (scrapes every service; alerts: compose/alerts.yml)"
        )
    if detach:
        return settings
    print("stack up; Ctrl-C stops it", file=sys.stderr)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    local.stop(settings.home)
    return settings


def down(*, wipe: bool) -> None:
    """Stops what ``up`` started; ``wipe`` also deletes the data kept for the next up."""
    home = StackSettings().home
    state = local.stop(home, wipe=wipe)
    print("stack stopped" if state is not None else "no stack was up")
    if wipe:
        print(f"deleted the stack's data under {home}")
