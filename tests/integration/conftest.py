"""Session fixtures: a real Apache Kafka node (the embedded broker without a JDK) and a real
Redis on free ports, and the services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.settings import StackSettings
from services.stack import local


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    home = tmp_path_factory.mktemp("streamml-home")
    with local.running_stack(
        StackSettings(home=home, kafka_bootstrap=None, redis_url=None)
    ) as settings:
        yield settings


@pytest.fixture(scope="session")
def logs_dir(stack: StackSettings) -> Path:
    path = Path(stack.home) / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


# Tests that write thousands of small batches to the shared topics run last. On the embedded broker
# (the fallback without a JDK) that matters: it keeps every stored batch and lists all of a
# partition's in each fetch (docs/operations.md), so run after them, the offline-store test took
# 34 s instead of 2.
WRITE_HEAVY_MODULES = ("test_featurizer_recovery.py", "test_scorer_recovery.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name in WRITE_HEAVY_MODULES)  # stable: order kept
