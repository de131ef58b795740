"""Starts and stops the Quix Streams peer on a running stack (benchmark and tests).

The peer runs with its own interpreter (``venv.py``), the repository on its ``PYTHONPATH``.
It is consuming once its consumer group is stable and owns every partition of the events
topic, which the runner reads from the broker (Quix has no hook of its own for it).
"""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import ConsumerGroupState

import services
from services.bench.quix.names import APP_ID, DOMAIN
from services.bench.quix.venv import ensure_venv
from services.bench.served import PeerProcess, wait_consuming
from services.core.domains import load_domain
from services.core.kafka import admin_client, partition_count
from services.core.settings import StackSettings
from services.stack.services import ServiceProcess, service_env

LOG_FILE = "quix.log"
POLL_S = 0.5
REPOSITORY = Path(services.__file__).resolve().parent.parent


class QuixPipeline(PeerProcess):
    """The Quix Streams peer's one process; ``stop()`` ends it (SIGTERM: Quix commits)."""

    process_name = "quix"

    def __init__(
        self,
        settings: StackSettings,
        home: Path,
        model_path: Path,
        model_version: str,
        commit_interval_s: float | None = None,
        profile: Path | None = None,
    ) -> None:
        self._settings = settings
        self._home = home.resolve()
        self._model = (model_path.resolve(), model_version)
        self._commit_interval_s = commit_interval_s
        self._profile = profile
        self.log_path = self._home / LOG_FILE

    def start(self, timeout_s: float = 180.0) -> None:
        """Returns once the peer consumes every partition of the events topic; raises
        ``StackError``, naming its log, when it exits or takes longer than ``timeout_s``."""
        python = ensure_venv(self._settings.cache_dir)
        self._home.mkdir(parents=True, exist_ok=True)
        argv = [str(python), "-m", "services.bench.quix", "--home", str(self._home)]
        argv += ["--model", str(self._model[0]), "--model-version", self._model[1]]
        if self._commit_interval_s is not None:
            argv += ["--commit-interval", str(self._commit_interval_s)]
        if self._profile is not None:
            argv += ["--profile", str(self._profile.resolve())]
        env = service_env(self._settings, {"PYTHONPATH": str(REPOSITORY)})
        self._worker = worker = ServiceProcess(self.process_name, env, self.log_path, command=argv)
        events = load_domain(self._settings.features_dir, DOMAIN).topics.events
        wanted = set(range(partition_count(self._settings, events)))
        wait_consuming(
            "the Quix peer", worker, lambda: self._consuming(events, wanted), timeout_s, self.stop
        )

    def _consuming(self, topic: str, partitions: set[int]) -> bool:
        admin = admin_client(self._settings)
        try:
            (future,) = admin.describe_consumer_groups([APP_ID], request_timeout=5).values()
            group = future.result()
        except Exception:  # the group does not exist yet, or the broker is busy: ask again
            return False
        if group.state != ConsumerGroupState.STABLE:
            return False
        owned = {
            tp.partition
            for member in group.members
            for tp in (member.assignment.topic_partitions if member.assignment else [])
            if tp.topic == topic
        }
        return owned == partitions
