"""The AsyncAPI document (docs/asyncapi.yaml): up to date with the declarations and schemas,
complete, and valid by the AsyncAPI parser from the npm registry."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from pathlib import Path

import yaml

from services.core.declarations import Domain
from services.core.paths import default_docs_dir
from services.core.schemas import SchemaStore
from services.core.settings import default_cache_dir
from services.core.topics import ALERTS, MODEL_EVENTS, MODELS, RETRAIN_REQUESTS, schema_subject
from services.schematools.asyncapi import asyncapi_document, render, write_asyncapi

DOCUMENT = default_docs_dir() / "asyncapi.yaml"
CHECKER = Path(__file__).resolve().parents[1] / "asyncapi"


def test_the_committed_document_is_what_the_declarations_give(
    payments: Domain, schemas_dir: Path
) -> None:
    out = io.StringIO()
    assert write_asyncapi([payments], schemas_dir, DOCUMENT, "0.1.0", check=True, out=out) == 0, (
        out.getvalue()
    )


def test_a_stale_document_is_found(payments: Domain, schemas_dir: Path, tmp_path: Path) -> None:
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text(DOCUMENT.read_text().replace("exactly one prediction", "a prediction"))
    out = io.StringIO()
    assert write_asyncapi([payments], schemas_dir, stale, "0.1.0", check=True, out=out) == 1
    assert "stale; run `streamml schemas asyncapi`" in out.getvalue()
    assert write_asyncapi([payments], schemas_dir, stale, "0.1.0", check=False, out=out) == 0
    assert stale.read_text() == DOCUMENT.read_text()


def test_every_topic_has_its_avro_schema_a_sender_and_a_receiver(
    payments: Domain, schema_store: SchemaStore
) -> None:
    document = yaml.safe_load(render(asyncapi_document([payments], schema_store, "0.1.0")))
    channels = {c["address"]: (name, c) for name, c in document["channels"].items()}
    topics = payments.topics
    expected = set(topics.data_topics()) | {MODELS, MODEL_EVENTS, ALERTS, RETRAIN_REQUESTS}
    assert set(channels) == expected
    messages = document["components"]["messages"]
    for topic, (name, channel) in channels.items():
        (reference,) = channel["messages"].values()
        message = messages[reference["$ref"].rsplit("/", 1)[1]]
        assert message["payload"]["schema"] == schema_store.current(schema_subject(topic)).source
        actions = {
            op["action"]
            for op in document["operations"].values()
            if op["channel"]["$ref"] == f"#/channels/{name}"
        }
        assert actions == {"send", "receive"}, topic
    senders = {
        op["tags"][0]["name"]
        for op in document["operations"].values()
        if op["action"] == "send" and op["channel"]["$ref"].endswith("payments_transactions")
    }
    assert senders == {"producers"}


def _parser_dir() -> Path:
    """The AsyncAPI parser installed from the npm registry once (by its lock file's hash)."""
    lock = (CHECKER / "package-lock.json").read_bytes()
    home = default_cache_dir() / "asyncapi-parser" / hashlib.sha256(lock).hexdigest()[:12]
    if not (home / "node_modules" / "@asyncapi" / "parser").is_dir():
        home.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json", "validate.mjs"):
            shutil.copy(CHECKER / name, home / name)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=home,
            check=True,
            timeout=600,
        )
    shutil.copy(CHECKER / "validate.mjs", home / "validate.mjs")
    return home


def test_the_asyncapi_parser_finds_the_document_valid() -> None:
    assert shutil.which("npm"), "this test needs Node 18+ and npm (the parser is fetched once)"
    home = _parser_dir()
    run = subprocess.run(
        ["node", str(home / "validate.mjs"), str(DOCUMENT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    channels = len(yaml.safe_load(DOCUMENT.read_text())["channels"])
    assert f"parsed: {channels} channels" in run.stdout
