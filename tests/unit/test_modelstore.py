"""The on-disk model store: versions, atomic saves, and verified loads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from services.core.errors import IntegrityError, ModelError
from services.registry.artifacts import ModelStore, path_of, sha256_hex

ARTIFACT = b"\x08\x07not really onnx but bytes all the same"


def test_versions_count_up_numerically_and_ignore_other_folders(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.next_version("fraud") == "1"
    for version in ("1", "2", "9", "10"):
        store.save("fraud", version, ARTIFACT, {})
    (tmp_path / "fraud" / "latest").mkdir()
    (tmp_path / "fraud" / "README").write_text("not a version")
    assert store.versions("fraud") == [1, 2, 9, 10]
    assert store.next_version("fraud") == "11"
    assert store.next_version("other") == "1"


def test_save_writes_artifact_and_card(tmp_path: Path) -> None:
    stored = ModelStore(tmp_path).save("fraud", "1", ARTIFACT, {"dataset_id": "ds-1"})
    assert stored.path == (tmp_path / "fraud" / "1" / "model.onnx").resolve()
    assert stored.path.read_bytes() == ARTIFACT
    assert stored.uri == stored.path.as_uri()
    assert stored.uri.startswith("file:///")
    assert stored.sha256 == hashlib.sha256(ARTIFACT).hexdigest() == sha256_hex(ARTIFACT)
    card = json.loads((stored.path.parent / "card.json").read_text())
    assert card == {"dataset_id": "ds-1", "artifact_uri": stored.uri, "sha256": stored.sha256}
    assert sorted(p.name for p in stored.path.parent.iterdir()) == ["card.json", "model.onnx"]


def test_a_version_is_never_overwritten(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save("fraud", "1", ARTIFACT, {})
    with pytest.raises(ModelError, match="already exists"):
        store.save("fraud", "1", b"other bytes", {})
    assert (tmp_path / "fraud" / "1" / "model.onnx").read_bytes() == ARTIFACT


def test_round_trip_through_the_uri(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "with space%20and percent")
    stored = store.save("fraud", "1", ARTIFACT, {})
    assert path_of(stored.uri) == stored.path
    assert store.load_verified(stored.uri, stored.sha256) == ARTIFACT
    assert store.load_verified(stored.uri, stored.sha256.upper()) == ARTIFACT


def test_a_tampered_artifact_is_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    stored = store.save("fraud", "1", ARTIFACT, {})
    stored.path.write_bytes(ARTIFACT + b"\x00")
    with pytest.raises(IntegrityError, match="sha256"):
        store.load_verified(stored.uri, stored.sha256)


def test_a_missing_artifact_names_its_path(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    stored = store.save("fraud", "1", ARTIFACT, {})
    stored.path.unlink()
    with pytest.raises(ModelError, match="does not exist") as raised:
        store.load_verified(stored.uri, stored.sha256)
    assert str(stored.path) in str(raised.value)
    assert not isinstance(raised.value, IntegrityError)


@pytest.mark.parametrize("uri", ["s3://bucket/model.onnx", "file://otherhost/model.onnx", "x"])
def test_only_local_file_uris_are_read(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ModelError, match="file://"):
        ModelStore(tmp_path).load_verified(uri, sha256_hex(ARTIFACT))


def test_an_artifact_file_can_be_named(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    stored = store.save("fraud", "1", ARTIFACT, {"kind": "river"}, artifact_file="model.river.pkl")
    assert stored.path == (tmp_path / "fraud" / "1" / "model.river.pkl").resolve()
    assert store.load_verified(stored.uri, stored.sha256) == ARTIFACT
    assert store.card("fraud", "1")["sha256"] == stored.sha256
    with pytest.raises(ModelError, match="no model card"):
        store.card("fraud", "2")


def test_a_snapshot_is_the_next_version_with_the_parents_card(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save("fraud", "1", ARTIFACT, {"kind": "river", "seed": 7, "metrics": {"auc": 0.9}})
    (tmp_path / "fraud" / "2").mkdir()  # claimed by another writer, not yet written
    snapshot = store.save_snapshot(
        "fraud", "1", b"learned more", {"online": {"rows": 5}}, artifact_file="model.river.pkl"
    )
    assert (snapshot.version, snapshot.parent_version) == ("3", "1")
    assert store.load_verified(snapshot.artifact.uri, snapshot.artifact.sha256) == b"learned more"
    card = store.card("fraud", "3")
    assert card == {
        "kind": "river",
        "seed": 7,
        "metrics": {"auc": 0.9},
        "online": {"rows": 5},
        "version": "3",
        "parent_version": "1",
        "artifact_uri": snapshot.artifact.uri,
        "sha256": sha256_hex(b"learned more"),
    }
    with pytest.raises(ModelError, match="no model card"):
        store.save_snapshot("fraud", "9", b"x", {}, artifact_file="model.river.pkl")
