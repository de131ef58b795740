"""CPU time and peak memory of a process, read from /proc (Linux), and counting its outputs."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    peak_rss_mib: float


def usage(pid: int) -> Usage:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime
    peak_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak_kib = int(line.split()[1])
    return Usage(cpu, peak_kib / 1024)


def resident_mib(pid: int) -> float:
    """The process's resident memory now (VmRSS), in MiB; 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def exited(pid: int) -> bool:
    """Whether a process has ended (gone, or a zombie its parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2 :].startswith("Z")


@dataclass(frozen=True)
class Counted:
    """When the first of N output records arrived, and the process's CPU time then."""

    started: float  # time.monotonic()
    cpu_at_start: float


def count_outputs(
    counter: Consumer, pid: int, wanted: int, start_timeout_s: float, log_path: Path
) -> Counted:
    """Reads ``counter`` until ``wanted`` records have arrived; the clock and the process's
    CPU time start at the first one. TimeoutError when none comes within the start timeout,
    or far fewer than wanted keep coming."""
    seen, started, cpu_at_start = 0, 0.0, 0.0
    deadline = time.monotonic() + start_timeout_s
    while seen < wanted:
        batch = counter.consume(10_000, 0.05)
        if batch and not seen:
            started, cpu_at_start = time.monotonic(), usage(pid).cpu_seconds
        seen += sum(1 for m in batch if m.error() is None)
        if not seen and time.monotonic() > deadline:
            raise TimeoutError(f"no output within {start_timeout_s:.0f} s; see {log_path}")
        if seen and time.monotonic() - started > 20 * start_timeout_s:
            raise TimeoutError(f"only {seen} of {wanted} outputs; see {log_path}")
    return Counted(started, cpu_at_start)
