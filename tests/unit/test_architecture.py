"""The tree reads like the architecture: rooms in layers, every import arrow pointing down.

A room is a package directly under ``services/``. A module may import its own room and any
room of a lower layer, never a room of its own layer or above: so no room imports the CLI,
the benchmarks and the demo import the services and never the reverse, and there are no
cycles between rooms. Imports inside functions and under ``TYPE_CHECKING`` count: a reader
follows them too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"

# Highest first. A room imports only rooms of the layers below its own.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"cli"}),
    frozenset({"bench", "demo"}),
    frozenset({"featurizer", "scorer", "trainer", "featurelog", "monitor", "stack"}),
    frozenset({"registry", "producer", "featurestore", "schematools", "integrations"}),
    frozenset({"models"}),
    frozenset({"core"}),
)
# Sub-rooms on top of their room's own modules: only the room's ``main`` (where the service is
# wired together) imports them.
SUB_ROOMS_ON_TOP = ("services.scorer.http",)
COMPOSITION_ROOT = "main"
MAX_MODULE_LINES = 400
MAX_CLI_LINES = 860  # 13 command groups: argparse and printing only, the work lives in the rooms


@dataclass(frozen=True)
class Arrow:
    source: str  # module that imports
    target: str  # module (or module.name) imported
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def module_name(path: Path, root: Path = SERVICES) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def arrows(root: Path = SERVICES) -> Iterator[Arrow]:
    """Every import of a ``services`` module, with the names taken from it."""
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root)
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target == "services" or target.startswith("services."):
                    yield Arrow(source, target, node.lineno)


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(room: str) -> int:
    for depth, rooms in enumerate(LAYERS):
        if room in rooms:
            return depth
    raise KeyError(room)


def rooms_on_disk(root: Path = SERVICES) -> set[str]:
    return {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}


def arrows_against_layers(found: list[Arrow]) -> list[Arrow]:
    return [
        a
        for a in found
        if room_of(a.source) != room_of(a.target)
        and room_of(a.target)
        and layer_of(room_of(a.target)) <= layer_of(room_of(a.source))
    ]


def test_every_room_has_a_layer() -> None:
    placed = set().union(*LAYERS)
    assert rooms_on_disk() - placed == set(), "a new room needs a place in LAYERS"
    assert placed - rooms_on_disk() == set(), "LAYERS names a room that is not there"


def test_every_import_arrow_points_down() -> None:
    found = list(arrows())
    assert len(found) > 300  # the walk sees the tree's imports
    upward = arrows_against_layers(found)
    assert upward == [], "\n".join(map(str, upward))


def test_the_check_catches_an_arrow_back_up(tmp_path: Path) -> None:
    room = tmp_path / "services" / "core"
    room.mkdir(parents=True)
    (room / "__init__.py").write_text("")
    (room / "bad.py").write_text("def f():\n    from services.cli import main\n")
    (room / "fine.py").write_text("from . import bad\nfrom services.core.bad import f\n")
    found = list(arrows(tmp_path / "services"))
    assert [str(a) for a in arrows_against_layers(found)] == [
        "services.core.bad:2 imports services.cli.main"
    ]
    assert {a.target for a in found} >= {"services.core.bad", "services.core.bad.f"}


def test_rooms_import_only_public_names_of_other_rooms() -> None:
    private = [
        a
        for a in arrows()
        if room_of(a.source) != room_of(a.target)
        and any(part.startswith("_") for part in a.target.split(".")[2:])
    ]
    assert private == [], "\n".join(map(str, private))


@pytest.mark.parametrize("sub_room", SUB_ROOMS_ON_TOP)
def test_a_rooms_own_modules_do_not_import_its_sub_rooms_on_top(sub_room: str) -> None:
    room = sub_room.rpartition(".")[0]
    inward = [
        a
        for a in arrows()
        if a.source.startswith(f"{room}.")
        and not a.source.startswith(sub_room)
        and a.source != f"{room}.{COMPOSITION_ROOT}"
        and a.target.startswith(sub_room)
    ]
    assert inward == [], "\n".join(map(str, inward))


def test_no_import_cycles_between_modules() -> None:
    modules = {module_name(p) for p in SERVICES.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for a in arrows():
        target = a.target if a.target in modules else a.target.rpartition(".")[0]
        if target in modules and target != a.source:
            graph[a.source].add(target)
    cycle = _a_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "p": {"p.x"}, "p.x": {"p"}}
    assert _a_cycle(graph) == ["a", "b", "c", "a"]
    assert _a_cycle({"a": {"b"}, "b": set(), "p": {"p.x"}, "p.x": {"p"}}) is None


def _a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (package ``__init__`` modules aside), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(f"{node}.") or node.startswith(f"{nxt}."):
                continue  # a package and its own modules
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_no_module_is_long() -> None:
    long = {
        str(p.relative_to(SERVICES.parent)): n
        for p in SERVICES.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_the_cli_only_parses_and_prints() -> None:
    lines = sum(len(p.read_text().splitlines()) for p in (SERVICES / "cli").rglob("*.py"))
    assert lines <= MAX_CLI_LINES
