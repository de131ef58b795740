"""atheris at the edges where outside bytes come in (services/bench/fuzz.py): every seed and
every past finding in tests/fuzz/ is replayed, then each target is fuzzed for a bounded time;
a crash fails the test with the input that caused it (copy it into tests/fuzz/<target>/ once
fixed, and it is replayed from then on)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.bench.fuzz import TARGETS, seeds
from services.bench.fuzz_targets import target_of

FUZZ_SECONDS = 8  # each target in the suite; `streamml bench fuzz` runs them longer


@pytest.mark.parametrize("target", TARGETS)
def test_every_seed_and_past_finding_is_handled(target: str) -> None:
    one = target_of(target)
    inputs = seeds(target)
    assert inputs, f"tests/fuzz/{target}/ has no seeds"
    for path in inputs:
        one(path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_a_bounded_fuzz_run_finds_no_crash(target: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "services.bench.fuzz", target, "--seconds", str(FUZZ_SECONDS),
         "--findings", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    found = sorted(p.name for p in tmp_path.iterdir())
    assert run.returncode == 0, f"{target}: {found}\n{run.stderr[-4000:]}"
    assert "stat::number_of_executed_units" in run.stderr
