"""Every schema stays FULLY compatible with what was committed before it; the checker itself."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.core.paths import default_schemas_dir
from services.schematools.compat import check_compatible, previous_committed, sample_datums

SCHEMAS = default_schemas_dir()
CURRENT = sorted(SCHEMAS.glob("*.avsc"))


def load(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def test_there_are_schemas_to_check() -> None:
    assert {p.stem for p in CURRENT} >= {"payments.transactions", "payments.features", "dlq"}


@pytest.mark.parametrize("path", CURRENT, ids=[p.stem for p in CURRENT])
def test_current_schema_is_compatible_with_its_previous_commit(path: Path) -> None:
    current = load(path)
    # None when no committed version differs (never changed since it was added): then the
    # check still proves sample data for this schema writes and resolves.
    previous = previous_committed(path) or current
    assert check_compatible(previous, current, path.stem) == []


def test_current_schemas_are_compatible_with_their_history() -> None:
    history = sorted((SCHEMAS / "history").glob("*/*.avsc"))
    for old in history:
        subject = old.parent.name
        current = SCHEMAS / f"{subject}.avsc"
        assert current.is_file(), f"{old} is history of {subject}, which has no current schema"
        assert check_compatible(load(old), load(current), subject) == [], old


# --- the checker ----------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "type": "record",
    "name": "Payment",
    "namespace": "test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {
            "name": "state",
            "type": {"type": "enum", "name": "State", "symbols": ["NEW", "PAID", "VOID"]},
        },
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "count", "type": "int"},
    ],
}


def changed(edit: Any) -> dict[str, Any]:
    schema = copy.deepcopy(BASE)
    edit(schema)
    return schema


def field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in schema["fields"] if f["name"] == name)
    return found


def drop(name: str) -> Any:
    return lambda s: s["fields"].remove(field(s, name))


def test_identical_schemas_are_compatible() -> None:
    assert check_compatible(BASE, copy.deepcopy(BASE)) == []


def test_removing_a_field_without_default_is_flagged() -> None:
    problems = check_compatible(BASE, changed(drop("amount")), "payments")
    assert len(problems) == 1
    assert "payments" in problems[0]
    assert "old schema cannot read data written with the new one" in problems[0]
    assert "amount" in problems[0]


def test_removing_a_field_with_default_is_accepted() -> None:
    assert check_compatible(BASE, changed(drop("note"))) == []


def test_adding_a_required_field_is_flagged() -> None:
    new = changed(lambda s: s["fields"].append({"name": "country", "type": "string"}))
    problems = check_compatible(BASE, new, "payments")
    assert len(problems) == 1
    assert "new schema cannot read data written with the old one" in problems[0]
    assert "country" in problems[0]


def test_adding_an_optional_field_with_default_is_accepted() -> None:
    new = changed(
        lambda s: s["fields"].append(
            {"name": "country", "type": ["null", "string"], "default": None}
        )
    )
    assert check_compatible(BASE, new) == []
    with_default = changed(
        lambda s: s["fields"].append({"name": "country", "type": "string", "default": "NL"})
    )
    assert check_compatible(BASE, with_default) == []


def test_changing_a_type_incompatibly_is_flagged_both_ways() -> None:
    new = changed(lambda s: field(s, "id").update(type="int"))
    problems = check_compatible(BASE, new)
    assert len(problems) == 2
    assert any("new schema cannot read" in p for p in problems)
    assert any("old schema cannot read" in p for p in problems)


def test_a_promotion_is_only_backward_compatible() -> None:
    """int -> long: new readers read old data, but old readers cannot read new longs."""
    problems = check_compatible(BASE, changed(lambda s: field(s, "count").update(type="long")))
    assert len(problems) == 1
    assert "old schema cannot read data written with the new one" in problems[0]


def test_removing_an_enum_symbol_is_flagged() -> None:
    new = changed(lambda s: field(s, "state")["type"]["symbols"].remove("VOID"))
    problems = check_compatible(BASE, new)
    assert len(problems) == 1
    assert "new schema cannot read data written with the old one" in problems[0]
    assert "VOID" in problems[0]


def test_adding_an_enum_symbol_needs_a_reader_default() -> None:
    new = changed(lambda s: field(s, "state")["type"]["symbols"].append("REFUNDED"))
    assert len(check_compatible(BASE, new)) == 1
    old_with_default = changed(lambda s: field(s, "state")["type"].update(default="NEW"))
    new_with_default = copy.deepcopy(new)
    field(new_with_default, "state")["type"]["default"] = "NEW"
    assert check_compatible(old_with_default, new_with_default) == []


def test_adding_a_union_branch_is_flagged() -> None:
    new = changed(lambda s: field(s, "note").update(type=["null", "string", "long"]))
    problems = check_compatible(BASE, new)
    assert len(problems) == 1
    assert "old schema cannot read data written with the new one" in problems[0]


def test_changes_inside_containers_are_found() -> None:
    new = changed(lambda s: field(s, "tags")["type"].update(items="bytes"))
    assert check_compatible(BASE, new) != []
    nested: dict[str, Any] = {
        "type": "record",
        "name": "Outer",
        "fields": [
            {
                "name": "inner",
                "type": {
                    "type": "map",
                    "values": {
                        "type": "record",
                        "name": "Inner",
                        "fields": [{"name": "x", "type": "long"}],
                    },
                },
            },
            {"name": "again", "type": "Inner"},
        ],
    }
    broken = copy.deepcopy(nested)
    broken["fields"][0]["type"]["values"]["fields"][0]["type"] = "string"
    assert check_compatible(nested, nested) == []
    assert len(check_compatible(nested, broken)) == 2


def test_renaming_a_record_is_flagged() -> None:
    assert check_compatible(BASE, {**copy.deepcopy(BASE), "name": "Transfer"}) != []


def test_logical_types_are_resolved_as_their_underlying_types() -> None:
    old = {"type": "record", "name": "R", "fields": [{"name": "t", "type": "long"}]}
    new = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
    }
    assert check_compatible(old, new) == []


def test_recursive_schemas_are_sampled_through_their_recursion() -> None:
    linked: dict[str, Any] = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "value", "type": "int"},
            {"name": "next", "type": ["null", "Node"], "default": None},
            {"name": "children", "type": {"type": "array", "items": "Node"}},
        ],
    }
    samples = sample_datums(linked)
    assert any(s["next"][0] == "Node" for s in samples)  # the recursive branch is written
    assert any(s["children"] for s in samples)
    assert check_compatible(linked, linked) == []
    wider = copy.deepcopy(linked)
    wider["fields"][0]["type"] = "long"
    assert len(check_compatible(linked, wider)) == 1


def test_samples_cover_every_branch_and_symbol() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "u", "type": ["null", "int", "long", "string", "bytes"]},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
            {"name": "f", "type": {"type": "fixed", "name": "F", "size": 3}},
            {"name": "m", "type": {"type": "map", "values": "double"}},
        ],
    }
    samples = sample_datums(schema)
    assert {s["u"][0] for s in samples} == {"null", "int", "long", "string", "bytes"}
    assert {s["e"] for s in samples} == {"A", "B", "C"}
    assert all(len(s["f"]) == 3 for s in samples)


def test_an_invalid_schema_is_a_problem() -> None:
    bad = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "nope"}]}
    problems = check_compatible(BASE, bad, "payments")
    assert len(problems) == 1
    assert "new schema is not valid Avro" in problems[0]


# --- previous_committed ---------------------------------------------------------------------

V1 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}
V2 = {
    "type": "record",
    "name": "R",
    "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "long", "default": 0}],
}
V3 = {**V2, "doc": "documented"}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty git repository that no user or system git configuration reaches."""
    for name in list(os.environ):
        if name.startswith("GIT_"):
            monkeypatch.delenv(name)
    (tmp_path / "gitconfig").write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "repo"
    (root / "schemas").mkdir(parents=True)
    git(root, "init", "-q")
    return root


def git(root: Path, *args: str) -> None:
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", *identity, *args], cwd=root, check=True, timeout=30)


def commit(root: Path, path: Path, schema: dict[str, Any], *, indent: int | None = None) -> None:
    path.write_text(json.dumps(schema, indent=indent))
    git(root, "add", str(path.relative_to(root)))
    git(root, "commit", "-q", "-m", f"write {path.name}")


def test_previous_is_the_version_before_the_last_change(repo: Path) -> None:
    path = repo / "schemas" / "thing.avsc"
    commit(repo, path, V1)
    commit(repo, path, V2)
    assert previous_committed(path) == V1


def test_previous_is_head_while_the_file_has_uncommitted_changes(repo: Path) -> None:
    path = repo / "schemas" / "thing.avsc"
    commit(repo, path, V1)
    commit(repo, path, V2)
    path.write_text(json.dumps(V3))
    assert previous_committed(path) == V2


def test_reformatting_is_not_a_version(repo: Path) -> None:
    path = repo / "schemas" / "thing.avsc"
    commit(repo, path, V1)
    commit(repo, path, V2)
    commit(repo, path, V2, indent=4)
    other = repo / "schemas" / "other.avsc"
    commit(repo, other, V1)
    assert previous_committed(path) == V1


def test_previous_of_the_current_directory_relative_path(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = repo / "schemas" / "thing.avsc"
    commit(repo, path, V1)
    commit(repo, path, V2)
    monkeypatch.chdir(repo / "schemas")
    assert previous_committed(Path("thing.avsc")) == V1


def test_no_previous_version(repo: Path, tmp_path: Path) -> None:
    added_once = repo / "schemas" / "thing.avsc"
    commit(repo, added_once, V1)
    assert previous_committed(added_once) is None
    untracked = repo / "schemas" / "new.avsc"
    untracked.write_text(json.dumps(V1))
    assert previous_committed(untracked) is None
    outside = tmp_path / "loose.avsc"
    outside.write_text(json.dumps(V1))
    assert previous_committed(outside) is None


def test_no_git_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "thing.avsc"
    path.write_text(json.dumps(V1))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert previous_committed(path) is None
