"""docs/integrating.md's examples, run as another team would run them, against the local stack:
Python (confluent-kafka, fastavro and docs/asyncapi.yaml), Java (Kafka's client and Apache
Avro from Maven Central) and a faust app with streamml's faust codec. Each publishes
transactions or reads predictions; the featurizer and scorer in between are ours."""

from __future__ import annotations

import hashlib
import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.core.paths import default_docs_dir
from services.core.settings import StackSettings
from services.stack.kafka.distribution import DEPENDENCY_PLUGIN
from tests.integration.test_pipeline import running_services

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("pipeline")]

EXAMPLES = default_docs_dir() / "examples"
ASYNCAPI = default_docs_dir() / "asyncapi.yaml"
EVENTS = 40


def run(argv: list[str], timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)


def lines_of(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    read = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {str(p["event_id"]): p for p in read}


def java_classpath(stack: StackSettings) -> str:
    """Kafka's client and Avro for the Java example, resolved by Maven once per pom."""
    pom = EXAMPLES / "java" / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    target = stack.cache_dir / "java-example" / f"classpath-{digest}.txt"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        done = run(
            [
                "mvn",
                "--batch-mode",
                "--quiet",
                "--file",
                str(pom),
                f"-Dmaven.repo.local={stack.cache_dir / 'kafka' / 'maven'}",
                f"-Dmdep.outputFile={target}",
                f"{DEPENDENCY_PLUGIN}:build-classpath",
            ],
            timeout_s=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return target.read_text().strip()


@pytest.fixture(scope="module")
def pipeline(stack: StackSettings, logs_dir: Path) -> Iterator[None]:
    with running_services(stack, logs_dir):
        yield


@pytest.fixture(scope="module")
def prefix() -> str:
    return uuid.uuid4().hex[:8]


def test_the_python_example_publishes_events_and_reads_their_predictions(
    stack: StackSettings,
    prefix: str,
) -> None:
    script = str(EXAMPLES / "python" / "integrate.py")
    events = f"py-{prefix}"
    published = run(
        [sys.executable, script, "publish", stack.bootstrap, str(ASYNCAPI), str(EVENTS), events]
    )
    assert published.returncode == 0, published.stderr
    read = lines_of(
        run([sys.executable, script, "read", stack.bootstrap, str(ASYNCAPI), events, str(EVENTS)])
    )
    assert set(read) == {f"{events}-{i}" for i in range(EVENTS)}
    assert all(
        0.0 <= p["score"] <= 1.0 and p["decision"] == (p["score"] >= 0.5) for p in read.values()
    )


def test_the_java_example_does_the_same_and_agrees_with_python(
    stack: StackSettings,
    prefix: str,
) -> None:
    classpath = java_classpath(stack)
    source = str(EXAMPLES / "java" / "Integrate.java")
    java = ["java", "-cp", classpath, source]
    events = f"java-{prefix}"
    published = run(
        [*java, "publish", stack.bootstrap, str(stack.schemas_dir), str(EVENTS), events]
    )
    assert published.returncode == 0, published.stderr[-3000:]
    by_java = lines_of(
        run([*java, "read", stack.bootstrap, str(stack.schemas_dir), events, str(EVENTS)])
    )
    assert set(by_java) == {f"{events}-{i}" for i in range(EVENTS)}
    script = str(EXAMPLES / "python" / "integrate.py")
    by_python = lines_of(
        run([sys.executable, script, "read", stack.bootstrap, str(ASYNCAPI), events, str(EVENTS)])
    )
    for event, prediction in by_java.items():
        assert prediction["score"] == pytest.approx(by_python[event]["score"], rel=1e-12)
        assert prediction["model_version"] == by_python[event]["model_version"]


def test_a_faust_app_reads_predictions_with_the_streamml_codec(
    stack: StackSettings,
    prefix: str,
    tmp_path: Path,
) -> None:
    events = f"py-{prefix}"  # predicted in the first test
    log_path = tmp_path / "faust.log"
    with log_path.open("w") as log:
        app = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "faust" / "predictions_app.py"),
                stack.bootstrap,
                events,
            ],
            cwd=tmp_path,  # faust writes its data folder in the working directory
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    assert app.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(x) for x in app.stdout], daemon=True)
    reader.start()
    seen: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + 150
        while len(seen) < EVENTS and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert app.poll() is None, "the faust app exited"
                continue
            if line.startswith("{"):
                prediction = json.loads(line)
                seen[prediction["event_id"]] = prediction
    finally:
        app.terminate()
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        reader.join(timeout=10)  # it ends at the pipe's end, once the app has exited
        app.stdout.close()
    errors = log_path.read_text()
    assert set(seen) == {f"{events}-{i}" for i in range(EVENTS)}, errors[-4000:]
