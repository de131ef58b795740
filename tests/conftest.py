"""How `make test` shares the tests between its two pytest-xdist workers.

The integration modules on the session stack (one Kafka, one Redis, started once per worker
that needs them) all go to one worker, in order; the modules that start servers of their own
(a cluster, a stack to stop and restart, `streamml up`) go together to the other, with the unit
tests filling in wherever a worker is free. So the session stack starts once and the two halves
overlap (docs/operations.md, "CI time").
"""

from __future__ import annotations

from typing import Any

OWN_SERVERS_MODULES = frozenset(
    {
        "test_bench_broker.py",
        "test_broker_loss.py",
        "test_faults.py",
        "test_kafka_stack.py",
        "test_monitor.py",  # on the session stack, but long: it evens the two halves out
        "test_observability.py",
        "test_secured.py",
        "test_stack_cli.py",
    }
)


def scope_of(nodeid: str) -> str:
    """The unit of scheduling a test belongs to: one of the two integration halves, or itself."""
    path = nodeid.split("::", 1)[0]
    if "tests/integration/" not in path:
        return nodeid
    return "own-servers" if path.rsplit("/", 1)[-1] in OWN_SERVERS_MODULES else "session-stack"


def pytest_xdist_make_scheduler(config: Any, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ByServers(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return ByServers(config, log)
