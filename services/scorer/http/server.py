"""The scorer's HTTP server: uvicorn serving the ASGI application from a daemon thread.

The socket is bound here, before the thread starts, so a port in use is a clear error at
start-up and port 0 resolves to the port actually taken. The scorer's stream loop keeps the
main thread (and the signals); ``close`` asks uvicorn to finish the requests in flight.
"""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from services.core.errors import StackError
from services.scorer.http.app import Asgi

log = logging.getLogger(__name__)

_CLOSE_S = 10


class ScoringHttpServer:
    """An ASGI application on ``host:port`` (0: a free port), served by uvicorn."""

    def __init__(self, app: Asgi, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
            self._socket.listen(128)
        except OSError as exc:
            self._socket.close()
            raise StackError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from exc
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=_CLOSE_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="scorer-http"
        )
        self._thread.daemon = True

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ScoringHttpServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(_CLOSE_S + 5)
        if self._thread.is_alive():
            log.warning("the HTTP server did not stop within %d s", _CLOSE_S + 5)
        self._socket.close()
