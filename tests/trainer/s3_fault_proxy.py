"""An HTTP proxy in front of the S3 server that injects faults, for the trainer's fault tests.

Requests pass through to the upstream (moto's server) unchanged unless a rule matches:

    error503 / error500   answer with that status and an S3 XML error body (SlowDown / InternalError)
    drop                  read the request, close the connection without a response
    slow                  forward after `delay` seconds
    hang                  hold the connection for `delay` seconds, then close it (a client timeout)

Rules match on the method and a substring of the path and fire `times` times (None: always),
so a test says "the next 3 PUTs to .../manifest.json get 503" or "everything drops".
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Rule:
    fault: str
    method: str | None = None
    path_contains: str | None = None
    times: int | None = 1
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path_contains is None or self.path_contains in path)


ERROR_BODY = {
    503: b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>',
    500: b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>',
}


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.rules: list[Rule] = []
        self.injected: list[tuple[str, str, str]] = []  # (fault, method, path) of every fault applied
        self.requests = 0
        self.in_flight = 0  # requests being handled (a slowed upload outlives a killed client)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        chunk = self.rfile.read(size + 2)[:size]
                        if size == 0:
                            # trailers until an empty line
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += chunk
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                with proxy._lock:
                    proxy.in_flight += 1
                try:
                    self._proxy()
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            def _proxy(self) -> None:
                body = self._body()
                if len(body) < int(self.headers.get("Content-Length") or 0):
                    # The client died mid-body: S3 refuses an upload shorter than announced.
                    self.close_connection = True
                    return
                rule = proxy._take(self.command, self.path)
                if rule is not None:
                    proxy.injected.append((rule.fault, self.command, self.path))
                    if rule.fault in ("error503", "error500"):
                        status = 503 if rule.fault == "error503" else 500
                        self.send_response(status)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(ERROR_BODY[status])))
                        self.end_headers()
                        self.wfile.write(ERROR_BODY[status])
                        return
                    if rule.fault == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if rule.fault == "hang":
                        time.sleep(rule.delay)
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if rule.fault == "slow":
                        time.sleep(rule.delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length")}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None,
                                 headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A killed client leaves a broken pipe behind: expected here, not worth a traceback.
        self.server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="s3-fault-proxy", daemon=True)

    def _take(self, method: str, path: str) -> Rule | None:
        with self._lock:
            self.requests += 1
            for rule in self.rules:
                if rule.matches(method, path) and (rule.times is None or rule.times > 0):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    def add(self, fault: str, *, method: str | None = None, path_contains: str | None = None, times: int | None = 1,
            delay: float = 0.0) -> Rule:
        rule = Rule(fault, method, path_contains, times, delay)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no request is being handled: an upload the proxy holds (slowed) when its
        client is killed still reaches S3 afterwards, as a fully sent request would."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.in_flight, f"{self.in_flight} requests still in flight after {timeout}s"

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
