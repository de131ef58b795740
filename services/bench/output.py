"""What a benchmark prints: progress on stderr, its result as JSON on stdout and in a file."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any


def report(result: Any, out: Path) -> None:
    """Writes a result dataclass to ``out`` as JSON and prints it."""
    text = json.dumps(asdict(result), indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)
