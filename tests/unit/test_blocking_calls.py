"""BlockingCalls: a client call that never returns is given up at our deadline, not theirs."""

from __future__ import annotations

import threading
import time

import pytest

from services.core.transactions import BlockingCalls, CallTimedOut


def test_a_call_returns_its_result_and_raises_its_error() -> None:
    calls = BlockingCalls("test")
    assert calls.call(lambda: 41 + 1, 5) == 42
    with pytest.raises(ZeroDivisionError):
        calls.call(lambda: 1 // 0, 5)
    calls.close()


def test_a_call_past_its_deadline_is_abandoned_and_the_next_call_runs_on_a_new_thread() -> None:
    calls = BlockingCalls("test")
    release = threading.Event()
    stuck_thread: list[threading.Thread] = []

    def never_returns() -> str:
        stuck_thread.append(threading.current_thread())
        release.wait(30)
        return "too late"

    started = time.monotonic()
    with pytest.raises(CallTimedOut, match="no answer"):
        calls.call(never_returns, 0.2)
    assert time.monotonic() - started < 5
    # The stuck call still holds its thread; the next one does not wait behind it.
    assert calls.call(threading.current_thread, 5) is not stuck_thread[0]
    release.set()
    stuck_thread[0].join(5)
    assert not stuck_thread[0].is_alive(), "an abandoned thread ends once its call returns"
    calls.close()


def test_calls_run_one_at_a_time_in_order_on_one_thread() -> None:
    calls = BlockingCalls("test")
    threads = {calls.call(threading.current_thread, 5) for _ in range(5)}
    assert len(threads) == 1
    (thread,) = threads
    assert thread is not threading.current_thread() and thread.daemon
    calls.close()
    thread.join(5)
    assert not thread.is_alive(), "close() ends the thread"
