"""The CI entry point is a script CI runs on a clean clone: it must parse, and it must end in
the same `make test` a developer runs. A broken script fails CI after 0 s with no test run."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CI_RUN = ROOT / ".ci" / "run"


def test_the_ci_entry_point_parses_as_bash() -> None:
    checked = subprocess.run(
        ["bash", "-n", str(CI_RUN)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_the_ci_entry_point_is_executable_and_ends_in_make_test() -> None:
    assert CI_RUN.stat().st_mode & 0o111, ".ci/run is not executable"
    commands = [
        line.strip()
        for line in CI_RUN.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == "make test"
    assert commands.count("make test") == 1
    assert "set -euo pipefail" in commands
