"""The Quix Streams peer's own virtualenv, made on first use from ``requirements.lock``.

quixstreams 3.28.1 pins confluent-kafka below 2.13 and pydantic below 2.14; the product needs
newer ones, so the peer cannot share the product's environment. Its virtualenv lives in the
cache folder under a name that carries the lock's hash: a changed lock makes a new one, and a
half-made one (no ``ready`` marker) is made again.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from services.bench.output import say
from services.core.errors import StackError

LOCK = Path(__file__).resolve().with_name("requirements.lock")
READY = "ready"
INSTALL_TIMEOUT_S = 1_800.0  # a fresh machine downloads about 300 MB


def venv_dir(cache_dir: Path) -> Path:
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]
    return cache_dir / f"quix-venv-{digest}"


def ensure_venv(cache_dir: Path) -> Path:
    """The peer's Python interpreter, its virtualenv made first if needed."""
    home = venv_dir(cache_dir)
    python = home / "bin" / "python"
    if (home / READY).exists():
        return python
    shutil.rmtree(home, ignore_errors=True)
    say(f"making the Quix Streams peer's virtualenv in {home} (first use: a minute or more)")
    started = time.monotonic()
    _run([sys.executable, "-m", "venv", str(home)])
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "-r", str(LOCK)])  # fmt: skip
    (home / READY).write_text(f"{LOCK}\n")
    say(f"the Quix Streams peer's virtualenv is ready ({time.monotonic() - started:.0f} s)")
    return python


def _run(argv: list[str]) -> None:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{argv[:4]} took more than {INSTALL_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        raise StackError(
            f"making the Quix Streams peer's virtualenv failed ({' '.join(argv[:5])} ...):\n"
            f"{done.stderr[-3000:]}"
        )
