"""Fuzzing the edges where outside bytes come in, with atheris (libFuzzer's engine for Python).

Targets:

- ``avro``: a record's bytes as any topic's consumer gets them. Each input picks a subject;
  half the inputs carry that subject's own single-object header, so the body reaches the
  compiled decoders, the other half test the header's checks. Decoding must return a record
  or raise ``SerializationError`` (what becomes a dead letter); the featurizer's whole event
  path (decode, checks, windows) must give a verdict, never raise.
- ``http``: a request body to ``POST /v1/score/<domain>``. The answer must be a JSON response
  below 500: a prediction or a named 4xx error.

``python -m services.bench.fuzz TARGET --seconds N`` runs one target (libFuzzer exits the
process when done, so it runs in a process of its own); a crash is written to the findings
folder and the exit code is not 0. ``streamml bench fuzz`` runs them longer; the test suite
briefly (tests/unit/test_fuzz.py). Seeds, and every finding once understood, live in
``tests/fuzz/<target>/`` and are replayed by the suite as regression tests.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TARGETS = ("avro", "http", "v2")
SEEDS_DIR = Path(__file__).resolve().parents[2] / "tests" / "fuzz"
# The code under test, instrumented for coverage as it is imported (instrumenting every loaded
# function, torch's included, took over five minutes).
INSTRUMENTED = ["services.core", "services.featurizer", "services.scorer", "services.bench"]


def seeds(name: str) -> list[Path]:
    """The target's seeds and past findings (regression inputs), in name order."""
    folder = SEEDS_DIR / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.bench.fuzz")
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--findings", type=Path, default=Path(".streamml/fuzz"))
    args = parser.parse_args(argv)
    import atheris  # type: ignore[import-untyped]  # no type hints published

    with atheris.instrument_imports(include=INSTRUMENTED):
        from services.bench.fuzz_targets import target_of

        one = target_of(args.target)
    args.findings.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{args.target}-") as corpus:
        for seed in seeds(args.target):
            shutil.copy(seed, Path(corpus) / seed.name)
        atheris.Setup(
            [
                sys.argv[0],
                f"-max_total_time={args.seconds}",
                f"-artifact_prefix={args.findings.resolve()}/{args.target}-",
                "-print_final_stats=1",
                corpus,
            ],
            one,
        )
        atheris.Fuzz()
    return 0


def run_targets(which: str, seconds: int, findings: Path) -> int:
    """Each chosen target in a process of its own; 1 when any of them crashed."""
    failed = []
    for target in TARGETS if which == "all" else (which,):
        print(f"==> fuzz: {target} for {seconds} s; findings in {findings}", file=sys.stderr)
        argv = [sys.executable, "-m", "services.bench.fuzz", target, "--seconds", str(seconds)]
        run = subprocess.run([*argv, "--findings", str(findings)], check=False)
        if run.returncode != 0:
            failed.append(target)
    if failed:
        print(f"==> fuzz: crashes in {', '.join(failed)}: see {findings}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
