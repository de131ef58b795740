"""Graceful stop: SIGTERM and SIGINT ask a service to stop; its loop finishes the batch first."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)


def stop_on_signals(stop: Callable[[], None], what: str) -> None:
    """Calls ``stop`` on SIGTERM or SIGINT; ``what`` says in the log what happens next."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: %s, then stopping", signum, what)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class StoppableLoop:
    """A service whose loop runs while ``_running``: ``stop()`` or SIGTERM/SIGINT clears it, and
    the loop finishes what it is doing (``stopping`` says what, in the log) before it ends."""

    stopping = "finishing the current batch"
    _running = True

    def stop(self, *_: object) -> None:
        self._running = False

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stop, self.stopping)
