"""The model artifact store on disk: ``<root>/<model_name>/<version>/{<artifact>,card.json}``.

The artifact file is ``model.onnx`` unless the caller names another (``model.river.pkl``).

Versions are immutable: an artifact is written once, atomically (temp file, then rename), so a
scorer never reads half a model. The registry topic carries the artifact's URI and sha256, and
``load_verified`` refuses bytes that are not the registered ones: what was validated is what runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse
from urllib.request import url2pathname

from services.core.errors import IntegrityError, ModelError

ARTIFACT_FILE = "model.onnx"
CARD_FILE = "card.json"

log = logging.getLogger(__name__)


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of an artifact: what the registry records and the scorer checks."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StoredArtifact:
    """Where a saved artifact is (``file://`` URI of its absolute path) and its sha256."""

    uri: str
    sha256: str
    path: Path


@dataclass(frozen=True)
class StoredSnapshot:
    """A snapshot saved as a new version: its version, its parent, and the stored artifact."""

    version: str
    parent_version: str
    artifact: StoredArtifact


class ModelStore:
    """Model versions as folders under one root; the folder names are the versions."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def versions(self, model_name: str) -> list[int]:
        """The model's existing versions, ascending (folders whose name is a positive int)."""
        folder = self.root / model_name
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdecimal())

    def next_version(self, model_name: str) -> str:
        """One more than the highest existing version: "1" for a new model."""
        return str(max(self.versions(model_name), default=0) + 1)

    def save(
        self,
        model_name: str,
        version: str,
        artifact_bytes: bytes,
        card: dict[str, Any],
        *,
        artifact_file: str = ARTIFACT_FILE,
    ) -> StoredArtifact:
        """Writes the artifact and its model card (with ``artifact_uri`` and ``sha256`` added).

        Raises ModelError when the version already has an artifact: versions are never rewritten.
        """
        folder = self.root / model_name / version
        path = (folder / artifact_file).resolve()
        if path.exists():
            raise ModelError(f"{model_name} version {version} already exists at {path}")
        folder.mkdir(parents=True, exist_ok=True)
        stored = StoredArtifact(path.as_uri(), sha256_hex(artifact_bytes), path)
        full_card = {**card, "artifact_uri": stored.uri, "sha256": stored.sha256}
        text = json.dumps(full_card, indent=2, sort_keys=True) + "\n"
        _write_atomically(path, artifact_bytes)
        _write_atomically(folder / CARD_FILE, text.encode())
        log.info("saved %s version %s to %s (sha256 %s)", model_name, version, path, stored.sha256)
        return stored

    def card(self, model_name: str, version: str) -> dict[str, Any]:
        """The version's model card; ModelError when it has none or it is not a JSON object."""
        path = self.root / model_name / version / CARD_FILE
        try:
            card = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(
                f"{model_name} version {version} has no model card at {path}"
            ) from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"the model card {path} cannot be read: {exc}") from exc
        if not isinstance(card, dict):
            raise ModelError(f"the model card {path} is not a JSON object")
        return cast(dict[str, Any], card)

    def update_card(self, model_name: str, version: str, updates: dict[str, Any]) -> None:
        """Adds what was learned about a version after it was saved (the gate's result) to its
        card. The artifact, and so its sha256, never changes."""
        card = {**self.card(model_name, version), **updates}
        text = json.dumps(card, indent=2, sort_keys=True) + "\n"
        _write_atomically(self.root / model_name / version / CARD_FILE, text.encode())

    def save_snapshot(
        self,
        model_name: str,
        parent_version: str,
        artifact_bytes: bytes,
        card_updates: dict[str, Any],
        *,
        artifact_file: str,
    ) -> StoredSnapshot:
        """Saves a further state of an existing version (an online model) as the next version.

        The card is the parent's with ``version`` and ``parent_version`` set and
        ``card_updates`` merged over it; ``artifact_uri`` and ``sha256`` are the new artifact's.
        The version folder is claimed with an exclusive mkdir, so two writers never share one.
        """
        parent = self.card(model_name, parent_version)
        for _ in range(100):
            version = self.next_version(model_name)
            try:
                (self.root / model_name / version).mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                continue  # another writer claimed it first: take the one after
            card = {**parent, **card_updates, "version": version, "parent_version": parent_version}
            stored = self.save(
                model_name, version, artifact_bytes, card, artifact_file=artifact_file
            )
            return StoredSnapshot(version, parent_version, stored)
        raise ModelError(f"cannot claim a new version of {model_name} under {self.root}")

    def load_verified(self, uri: str, sha256: str) -> bytes:
        """The artifact's bytes, after checking they hash to the registered ``sha256``."""
        path = path_of(uri)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"model artifact {path} does not exist (from {uri})") from None
        except OSError as exc:
            raise ModelError(f"model artifact {path} cannot be read: {exc}") from exc
        actual = sha256_hex(data)
        if actual != sha256.lower():
            raise IntegrityError(
                f"model artifact {path} has sha256 {actual}, the registry says {sha256}: "
                "it was changed after registration; retrain or re-register it"
            )
        return data


def path_of(uri: str) -> Path:
    """The local path a ``file://`` URI names; ModelError for any other kind of URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ModelError(f"model artifact URI {uri!r} is not a local file:// URI")
    return Path(url2pathname(parsed.path))


def _write_atomically(path: Path, data: bytes) -> None:
    """Writes beside the target, fsyncs, then renames: readers see the old file or the new one."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
