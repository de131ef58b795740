"""Apache Kafka's jars: resolved from Maven Central by Maven, kept in a cache outside the checkout.

The pinned ``pom.xml`` beside this file names the broker. Maven resolves it into a repository of
its own under the cache folder and writes the classpath; the classpath file is named after the
pom's content, so a changed pom is fetched anew and an unchanged one never runs Maven again.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from services.core.errors import StackError

POM = Path(__file__).with_name("pom.xml")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
JAVA_MIN_MAJOR = 17  # what Kafka 4's broker needs
FETCH_TIMEOUT_S = 900.0
_MAVEN_ERROR_LINES = 3


@dataclass(frozen=True)
class KafkaDistribution:
    """A Kafka that can run: its version, the java that runs it and the classpath."""

    version: str
    java: str
    classpath: str


def pinned_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if match is None:
        raise StackError(f"{POM} names no <kafka.version>")
    return match.group(1)


def find_java(java_home: Path | None) -> str | None:
    """The java that runs Kafka: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    if java_home is not None:
        candidate = java_home / "bin" / "java"
        return str(candidate) if candidate.is_file() else None
    return shutil.which("java")


@functools.cache
def java_major(java: str) -> int:
    """The major version ``java -version`` reports (17 for "17.0.15", 8 for "1.8.0_402");
    asked once per binary (choosing the broker and starting it both need it)."""
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise StackError(f"cannot run {java}: {exc.strerror}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        raise StackError(f"{java} -version printed no version: {result.stderr.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java(java_home: Path | None) -> str:
    java = find_java(java_home)
    if java is None:
        where = f"{java_home}/bin/java" if java_home else "java on PATH"
        raise StackError(
            f"Apache Kafka needs a JDK {JAVA_MIN_MAJOR}+ and there is no {where}; install one "
            "(Debian: apt-get install openjdk-17-jre-headless), or set STREAMML_BROKER=embedded "
            "for the embedded broker, or STREAMML_KAFKA_BOOTSTRAP for a cluster of your own"
        )
    major = java_major(java)
    if major < JAVA_MIN_MAJOR:
        raise StackError(
            f"{java} is Java {major}; Apache Kafka 4 needs {JAVA_MIN_MAJOR} or newer "
            "(set JAVA_HOME to a newer JDK, or STREAMML_BROKER=embedded)"
        )
    return java


def classpath_file(cache_dir: Path) -> Path:
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
    return cache_dir / "kafka" / f"classpath-{digest}.txt"


def cached_classpath(cache_dir: Path) -> str | None:
    """The classpath of an earlier fetch, when every jar on it is still there."""
    path = classpath_file(cache_dir)
    try:
        classpath = path.read_text().strip()
    except FileNotFoundError:
        return None
    jars = classpath.split(":")
    if not classpath or not all(Path(jar).is_file() for jar in jars):
        return None
    return classpath


def resolve(
    cache_dir: Path, java_home: Path | None, maven_repository: str | None
) -> KafkaDistribution:
    """Kafka ready to run: the JDK checked, the jars fetched once (with Maven's progress)."""
    java = require_java(java_home)
    classpath = cached_classpath(cache_dir)
    if classpath is None:
        fetch(cache_dir, maven_repository)
        classpath = cached_classpath(cache_dir)
        if classpath is None:
            raise StackError(f"Maven ran but {classpath_file(cache_dir)} lists missing jars")
    return KafkaDistribution(pinned_version(), java, classpath)


def fetch(cache_dir: Path, maven_repository: str | None) -> None:
    """Runs Maven once, relaying each download to stderr, and raises with Maven's own error."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "the Apache Kafka jars are not cached yet and there is no mvn on PATH to fetch them "
            "(Debian: apt-get install maven); or set STREAMML_BROKER=embedded"
        )
    target = classpath_file(cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        mvn,
        "--batch-mode",
        "--file",
        str(POM),
        f"-Dmaven.repo.local={cache_dir / 'kafka' / 'maven'}",
        f"-Dmdep.outputFile={target}",
        f"{DEPENDENCY_PLUGIN}:build-classpath",
    ]
    if maven_repository:
        argv.insert(-1, f"-Dstreamml.maven.repository={maven_repository}")
    print(
        f"fetching Apache Kafka {pinned_version()} from Maven Central into "
        f"{cache_dir / 'kafka'} (once; about 65 MB)",
        file=sys.stderr,
        flush=True,
    )
    errors = _run_maven(argv)
    if errors is not None:
        target.unlink(missing_ok=True)
        raise StackError(
            "could not fetch Apache Kafka's jars with Maven: "
            + errors
            + "\nIs Maven Central reachable (a proxy goes in ~/.m2/settings.xml, a mirror in "
            "STREAMML_MAVEN_REPOSITORY)? Or set STREAMML_BROKER=embedded, or "
            "STREAMML_KAFKA_BOOTSTRAP to use a cluster of your own."
        )


def _run_maven(argv: list[str]) -> str | None:
    """Maven's first error lines when it fails, else None; downloads are shown as they end."""
    errors: list[str] = []
    try:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc.strerror}"
    with process:  # closes its output pipe, whatever happens
        assert process.stdout is not None
        for line in process.stdout:
            text = re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip().removeprefix("[INFO] ")
            if text.startswith("Downloaded from") and ".jar (" in text:
                print(f"  {text.rsplit('/', 1)[-1]}", file=sys.stderr, flush=True)
            elif text.startswith("[ERROR]") and len(errors) < _MAVEN_ERROR_LINES:
                message = text.removeprefix("[ERROR]").strip()
                if message:
                    errors.append(message)
        code = process.wait(FETCH_TIMEOUT_S)
    if code == 0:
        return None
    return "\n".join(errors) or f"mvn exited with code {code}"
