"""Runs services (`streamml run ...`) as child processes against one stack, and stops them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from services.core.settings import ENV_PREFIX, StackSettings
from services.stack.processes import stop_pid


def service_env(settings: StackSettings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a child service needs to find this stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        {
            f"{ENV_PREFIX}KAFKA_BOOTSTRAP": settings.bootstrap,
            f"{ENV_PREFIX}REDIS_URL": settings.redis,
            f"{ENV_PREFIX}EMBEDDED": "true" if settings.embedded else "false",
            f"{ENV_PREFIX}HOME": str(settings.home.resolve()),
            f"{ENV_PREFIX}SCHEMAS_DIR": str(settings.schemas_dir.resolve()),
            f"{ENV_PREFIX}FEATURES_DIR": str(settings.features_dir.resolve()),
        }
    )
    if settings.kafka_client_config:  # SASL and TLS settings, credentials included
        env[f"{ENV_PREFIX}KAFKA_CLIENT_CONFIG"] = json.dumps(settings.kafka_client_config)
    # Timings chosen for this stack, not its defaults: the children wait as the parent does.
    if settings.fetch_wait_ms is not None:
        env[f"{ENV_PREFIX}FETCH_WAIT_MS"] = str(settings.fetch_wait_ms)
    if settings.session_timeout_ms is not None:
        env[f"{ENV_PREFIX}SESSION_TIMEOUT_MS"] = str(settings.session_timeout_ms)
    env.update(extra or {})
    return env


class ServiceProcess:
    """``streamml run <service>`` (or ``command`` under that name) in a child process, its
    output in a log file."""

    def __init__(
        self,
        service: str,
        env: Mapping[str, str],
        log_path: Path,
        *args: str,
        command: Sequence[str] | None = None,
    ) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.name = service
        self.log_path = log_path
        argv = command or [sys.executable, "-m", "services.cli", "run", service, *args]
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> int | None:
        """SIGTERM (graceful), SIGKILL if it does not stop in time; returns the exit code."""
        stop_pid(self.process.pid, timeout_s=20.0)
        return self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
