"""The systems ``streamml bench`` measures: ours (the featurizer and the scorer as services),
the tutorial-style faust peer and the Quix Streams peer, each started on a running stack with
the same champion."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from services.bench.output import say
from services.core.declarations import Domain
from services.core.errors import ConfigError
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.registry.artifacts import ModelStore, path_of
from services.registry.stages import promote
from services.stack.processes import free_port
from services.stack.services import ServiceProcess, service_env
from services.trainer.publish import train_and_register

# ``streamml bench --set STREAMML_QUIX_COMMIT_INTERVAL_S=1``: the Quix peer's checkpoint interval.
QUIX_COMMIT_INTERVAL = "STREAMML_QUIX_COMMIT_INTERVAL_S"
# ``--set STREAMML_QUIX_PROFILE=quix.prof``: the Quix peer runs under cProfile, stats written there.
QUIX_PROFILE = "STREAMML_QUIX_PROFILE"


class System(Protocol):
    """The processes under test; ``pids`` names each for CPU and memory, ``metrics_ports``
    each that serves our metrics (none for the peer)."""

    @property
    def pids(self) -> dict[str, int]: ...

    @property
    def metrics_ports(self) -> dict[str, int]: ...

    def stop(self) -> None: ...


class OurPipeline:
    def __init__(
        self,
        settings: StackSettings,
        home: Path,
        service_settings: Mapping[str, str],
        services: tuple[str, ...] = ("featurizer", "scorer"),
    ) -> None:
        self.metrics_ports = {name: free_port() for name in services}
        self._processes = {
            name: ServiceProcess(
                name,
                service_env(settings, {**service_settings, "STREAMML_METRICS_PORT": str(port)}),
                home / f"{name}.log",
            )
            for name, port in self.metrics_ports.items()
        }

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.process.pid for name, p in self._processes.items()}

    def stop(self) -> None:
        for process in self._processes.values():
            process.stop()


def champion(settings: StackSettings, domain: Domain, events: int, seed: int) -> tuple[Path, str]:
    """A bootstrap model trained on ``events`` synthetic events and promoted; its artifact's
    path (the peer loads the same file) and version."""
    say(f"training and promoting the bootstrap model ({events} events)")
    version = train_and_register(settings, domain, seed=seed, events=events)
    promote(settings, codecs_for(settings), domain.model_name, version)
    card = ModelStore(settings.models_dir).card(domain.model_name, version)
    return path_of(str(card["artifact_uri"])), version


def start_system(
    name: str,
    settings: StackSettings,
    home: Path,
    model: Path,
    version: str,
    service_settings: Mapping[str, str],
) -> System:
    if name == "streamml":
        return OurPipeline(settings, home, service_settings)
    if name == "quix":
        from services.bench.quix.runner import QuixPipeline

        interval = service_settings.get(QUIX_COMMIT_INTERVAL)
        profile = service_settings.get(QUIX_PROFILE)
        quix = QuixPipeline(
            settings,
            home / "quix",
            model,
            version,
            float(interval) if interval else None,
            Path(profile) if profile else None,
        )
        quix.start()
        return quix
    if name != "peer":
        raise ConfigError(f"no system {name!r}: streamml, peer or quix")
    from services.bench.peer.runner import PeerPipeline

    peer = PeerPipeline(settings, home, model, version)
    peer.start()
    return peer
