"""Starting, waiting for and stopping the stack's server processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.core.errors import StackError

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_for(requested: int | None, what: str) -> int:
    """The port asked for, once it is known to be free, else a free one."""
    if requested is None:
        return free_port()
    ensure_port_free(requested, what)
    return requested


def ensure_port_free(port: int, what: str) -> None:
    """Raises unless a server could listen on ``port``. With SO_REUSEADDR, as Kafka and Redis
    bind: a port whose last connections are still in TIME_WAIT (a server just stopped, and
    started again on its port) is free; one a server listens on is not."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise StackError(
                f"port {port} for the {what} is taken ({exc.strerror}); "
                "choose another port or leave it out to pick a free one"
            ) from exc


def spawn(argv: Sequence[str], log_path: Path, *, detach: bool) -> subprocess.Popen[bytes]:
    """Starts a server with its output in ``log_path``; detached ones outlive this process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
            )
        except OSError as exc:
            raise StackError(f"cannot run {argv[0]}: {exc.strerror}") from exc


@dataclass(frozen=True)
class Watched:
    """A server process being waited for: if it exits, the wait ends with its log."""

    process: subprocess.Popen[bytes]
    what: str
    log_path: Path


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log_path: Path
) -> None:
    wait_for(ready, [Watched(process, what, log_path)], what, READY_TIMEOUT_S)


def wait_for(
    ready: Callable[[], bool], watched: Sequence[Watched], what: str, timeout_s: float
) -> None:
    """Until ``ready()``; raises with the log's last lines when a process exits or time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for item in watched:
            if item.process.poll() is not None:
                raise StackError(
                    f"the {item.what} exited with code {item.process.returncode} before "
                    f"answering; its log {item.log_path} ends with:\n{tail(item.log_path)}"
                )
        if ready():
            return
        time.sleep(0.05)
    stop_processes([item.process for item in watched])
    logs = "\n".join(f"{item.log_path} ends with:\n{tail(item.log_path)}" for item in watched)
    raise StackError(f"the {what} did not answer within {timeout_s:.0f} s; {logs}")


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def stop_pid(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM, then SIGKILL after ``timeout_s``; True when the process is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    return not alive(pid)


def alive(pid: int) -> bool:
    """Whether the process runs (a child of ours that has exited is reaped here)."""
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall back to signal 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process holds the pid
    return True


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_pids(pids: Sequence[int], timeout_s: float = STOP_TIMEOUT_S) -> list[int]:
    """``stop_pid`` for several processes at once (SIGTERM to all first, so a cluster's nodes
    shut down together); returns the pids that did not stop."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if not stop_pid(pid, timeout_s=0.0)]


def stop_processes(
    processes: Sequence[subprocess.Popen[bytes]], timeout_s: float = STOP_TIMEOUT_S
) -> None:
    """Our own children: SIGTERM to all at once, SIGKILL to those not gone after ``timeout_s``,
    each one waited for (so none is left a zombie)."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
