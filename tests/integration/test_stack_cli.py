"""`streamml up --detach` and `streamml down` as a user runs them, in a separate process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from services.core.domains import load_domains
from services.core.paths import default_features_dir
from services.core.topics import MODELS
from services.stack.processes import LOOPBACK
from tests.integration.helpers import read_env, streamml

pytestmark = pytest.mark.integration


def test_up_detach_starts_a_stack_other_commands_find_and_down_stops_it(tmp_path: Path) -> None:
    home = tmp_path / "state"
    up = streamml(home, "up", "--detach")
    assert up.returncode == 0, up.stderr
    env = read_env(home / "stack.env")
    bootstrap, redis_url = env["STREAMML_KAFKA_BOOTSTRAP"], env["STREAMML_REDIS_URL"]
    assert bootstrap.startswith(f"{LOOPBACK}:") and redis_url.startswith(f"redis://{LOOPBACK}:")
    try:
        assert redis.Redis.from_url(redis_url).ping()
        topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        assert len(topics[MODELS].partitions) == 1
        for domain in load_domains(default_features_dir()).values():
            for topic in domain.topics.data_topics():
                assert len(topics[topic].partitions) == 4, topic

        listing = streamml(home, "models", "list", "payments")  # reads stack.env, starts nothing
        assert listing.returncode == 0 and "no versions registered" in listing.stdout, (
            listing.stderr
        )

        again = streamml(home, "up", "--detach")
        assert again.returncode == 2 and "already up" in again.stderr
    finally:
        down = streamml(home, "down")
    assert down.returncode == 0 and "stack stopped" in down.stdout
    assert not (home / "stack.env").exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()


def test_up_says_clearly_when_a_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = streamml(tmp_path / "state", "up", "--detach", "--kafka-port", str(port))
    assert result.returncode == 2
    assert f"port {port} for the broker is taken" in result.stderr
    assert not (tmp_path / "state" / "stack.env").exists()


def test_commands_without_a_stack_say_what_to_do(tmp_path: Path) -> None:
    result = streamml(tmp_path / "nothing-here", "models", "list", "payments")
    assert result.returncode == 2
    assert "streamml up --detach" in result.stderr and "STREAMML_KAFKA_BOOTSTRAP" in result.stderr


def test_a_missing_embedded_broker_binary_is_a_clear_error(tmp_path: Path) -> None:
    result = streamml(
        tmp_path / "state",
        "up",
        "--detach",
        extra={"CALF_TANSU_BIN": str(tmp_path / "no-such-tansu"), "STREAMML_BROKER": "embedded"},
    )
    assert result.returncode == 2, result.stderr
    assert "broker" in result.stderr and "Traceback" not in result.stderr


def test_a_server_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "broken-broker"
    broken.write_text("#!/bin/sh\necho 'cannot open storage' >&2\nexit 3\n")
    broken.chmod(0o755)
    result = streamml(
        tmp_path / "state",
        "up",
        "--detach",
        extra={"CALF_TANSU_BIN": str(broken), "STREAMML_BROKER": "embedded"},
    )
    assert result.returncode == 2
    assert "the broker exited with code 3 before answering" in result.stderr
    assert "cannot open storage" in result.stderr


def test_up_in_the_foreground_stops_the_stack_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env["STREAMML_HOME"] = str(home)
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not (home / "stack.env").exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.2)
        redis_url = read_env(home / "stack.env")["STREAMML_REDIS_URL"]
        assert redis.Redis.from_url(redis_url).ping()
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    assert not (home / "stack.env").exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
