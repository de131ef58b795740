"""Session fixtures: a real embedded broker and a real Redis on free ports, and the services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.settings import StackSettings
from services.stack import embedded


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    home = tmp_path_factory.mktemp("streamml-home")
    with embedded.running_stack(
        StackSettings(home=home, kafka_bootstrap=None, redis_url=None)
    ) as settings:
        yield settings


@pytest.fixture(scope="session")
def logs_dir(stack: StackSettings) -> Path:
    path = Path(stack.home) / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path
