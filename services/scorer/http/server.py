"""The scorer's HTTP server: sockets and threads only; ``ScoringApi`` decides every answer."""

from __future__ import annotations

import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.core.errors import StackError
from services.scorer.http.api import Response, ScoringApi, error_response

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    """Socket I/O only; ``ScoringApi`` decides every answer."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # refusals of unparsable requests get a status line
    server_version = "streamml-scorer"
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        api = self.server.api
        started = time.perf_counter()
        body = self._body(api.max_body_bytes)
        if isinstance(body, Response):
            api.observe(api.route_of(self.path), body, started)
            self._write(body)
            return
        try:
            response = api.handle(self.command, self.path, body)
        except Exception:
            log.exception("HTTP %s %s failed", self.command, self.path)
            response = error_response(500, "internal", "the scorer failed on this request")
            api.observe(api.route_of(self.path), response, started)
        self._write(response)

    def _body(self, limit: int) -> bytes | Response:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return error_response(411, "length_required", "send the body with a Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            if self.command == "POST":
                self.close_connection = True
                return error_response(411, "length_required", "a POST needs a Content-Length")
            return b""
        try:
            size = int(length)
            if size < 0:
                raise ValueError(length)
        except ValueError:
            self.close_connection = True
            return error_response(400, "invalid_body", f"bad Content-Length {length!r}")
        if size > limit:
            self.close_connection = True
            return error_response(
                413, "too_large", f"the body is {size} bytes; at most {limit} per request"
            )
        return self.rfile.read(size)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The server's own refusals (a malformed request line, an unknown method) in JSON."""
        self.close_connection = True
        phrase = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "error"
        self._write(error_response(code, phrase.lower().replace(" ", "_"), message or phrase))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: ScoringApi) -> None:
        self.api = api
        super().__init__(address, _Handler)


class ScoringHttpServer:
    """``ScoringApi`` on a threaded HTTP server, served from a daemon thread."""

    def __init__(self, api: ScoringApi, host: str, port: int) -> None:
        try:
            self._server = _Server((host, port), api)
        except OSError as exc:
            raise StackError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from exc
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="scorer-http", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ScoringHttpServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
