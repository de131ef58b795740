"""Starts and stops the peer's one faust worker on a running stack (benchmark and tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from services.bench.peer.app import DOMAIN, SCORING_TOPIC, PeerConfig
from services.bench.served import PeerProcess, wait_consuming
from services.core.domains import load_domain
from services.core.kafka import partition_count
from services.core.settings import StackSettings
from services.stack.services import ServiceProcess, service_env

LOG_FILE = "peer.log"
POLL_S = 0.2


class PeerPipeline(PeerProcess):
    """Starts the peer's processes on a running stack; stop() stops them."""

    process_name = "peer"

    def __init__(
        self, settings: StackSettings, home: Path, model_path: Path, model_version: str
    ) -> None:
        self._settings = settings
        self._config = PeerConfig(home.resolve(), model_path.resolve(), model_version)
        self.log_path = self._config.home / LOG_FILE

    def start(self, timeout_s: float = 120.0) -> None:
        """Returns once the worker consumes every partition of both agents' topics; raises
        StackError, naming the log, when it exits or takes longer than ``timeout_s``."""
        self._config.home.mkdir(parents=True, exist_ok=True)
        self._config.ready_file.unlink(missing_ok=True)
        self._worker = worker = self._spawn()
        events = load_domain(self._settings.features_dir, DOMAIN).topics.events
        wanted = set(range(partition_count(self._settings, events)))
        wait_consuming(
            "the peer",
            worker,
            lambda: self._consuming({events, SCORING_TOPIC}, wanted),
            timeout_s,
            self.stop,
        )

    def _spawn(self) -> ServiceProcess:
        config = self._config
        argv = [
            sys.executable,
            "-m",
            "services.bench.peer",
            "--home",
            str(config.home),
            "--model",
            str(config.model_path),
            "--model-version",
            config.model_version,
        ]
        env = service_env(self._settings)
        return ServiceProcess(self.process_name, env, self.log_path, command=argv)

    def _consuming(self, topics: set[str], partitions: set[int]) -> bool:
        """Whether the worker's last finished rebalance gave it all ``partitions`` of each topic."""
        try:
            assigned: dict[str, list[int]] = json.loads(self._config.ready_file.read_text())
        except FileNotFoundError:
            return False
        return all(set(assigned.get(topic, ())) == partitions for topic in topics)
