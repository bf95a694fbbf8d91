"""HTTP for verify, with every wait bounded and every failure named.

urllib bounds each socket operation but not a whole request: a server that trickles one byte a
second never times out. Here each exchange has four bounds (see Timeouts) and a watchdog that
shuts the socket down when the request's or the run's deadline passes, so a blocked read returns.
Failures are `HTTPFailure(kind, detail)`; the kinds are listed in KINDS.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import ssl
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Iterator

from ..errors import UserError

MAX_LINE = 4 << 20          # one server-sent-events line
MAX_BODY = 16 << 20         # one JSON or /metrics body

KINDS = {
    "connect": "the connection was refused or the host is unknown",
    "timeout-connect": "no TCP connection within the connect timeout",
    "timeout-first-byte": "no response (headers or first event) within the first-byte timeout",
    "timeout-stall": "the response stopped for longer than the first-byte timeout",
    "timeout-request": "the request did not finish within the request timeout",
    "timeout-run": "the run's deadline passed",
    "closed": "the server closed the connection before a complete response",
    "protocol": "not valid HTTP (status line, headers or chunked framing)",
    "http-status": "an HTTP status other than 200",
    "too-large": "a body or line beyond verify's size limits",
    "not-json": "a body that should be JSON is not",
}


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0       # TCP connect
    first_byte: float = 300.0   # response headers, the first event, and any later gap between bytes
    request: float = 900.0      # one request from connect to its last byte
    run: float = 7200.0         # the whole verify run
    get: float = 30.0           # GET /v1/models, /metrics and POST /tokenize, start to end

    def check(self) -> "Timeouts":
        for name, value in vars(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UserError(f"timeout {name.replace('_', '-')}: expected a positive number of seconds, got {value!r}")
        return self


class Deadline:
    """The run's deadline (monotonic clock)."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.seconds = seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.remaining() <= 0


class HTTPFailure(Exception):
    def __init__(self, kind: str, detail: str, status: int | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.status = kind, detail, status


def split_url(base_url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path prefix) of --url; one line when it is no http(s) URL."""
    parts = urllib.parse.urlsplit(base_url.strip())
    try:
        port = parts.port
    except ValueError:
        raise UserError(f"{base_url!r}: the port is not a number in 1-65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{base_url!r}: expected an http:// or https:// URL, e.g. http://127.0.0.1:8000")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), parts.path.rstrip("/")


def _one_line(data: bytes, limit: int = 200) -> str:
    return " ".join(data[:limit].decode("utf-8", errors="replace").split())


class Exchange:
    """One HTTP request and its response, read line by line or whole, inside its deadline."""

    def __init__(self, base_url: str, timeouts: Timeouts, run: Deadline | None, whole: float):
        self.scheme, self.host, self.port, self.prefix = split_url(base_url)
        self.timeouts = timeouts
        budget = whole if run is None else min(whole, run.remaining())
        if budget <= 0:
            raise HTTPFailure("timeout-run", "the run's deadline passed before this request")
        self.run_limited = run is not None and run.remaining() < whole
        self.started = time.monotonic()
        self.budget = budget
        self.expired = False
        self.received = 0
        self.conn: http.client.HTTPConnection | None = None
        self.sock: socket.socket | None = None     # kept: http.client drops conn.sock once the response owns it
        self.response: http.client.HTTPResponse | None = None
        self._watchdog = threading.Timer(budget, self._expire)
        self._watchdog.daemon = True

    def _expire(self) -> None:
        self.expired = True
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _timed_out(self) -> HTTPFailure:
        if self.run_limited:
            return HTTPFailure("timeout-run", f"the run's deadline passed after {self.budget:.0f}s of this request")
        return HTTPFailure("timeout-request", f"not finished within {self.budget:.0f}s")

    def _translate(self, exc: BaseException) -> HTTPFailure:
        if self.expired:
            return self._timed_out()
        if isinstance(exc, HTTPFailure):
            return exc
        if isinstance(exc, (socket.timeout, TimeoutError)):
            if self.response is None or not self.received:
                return HTTPFailure("timeout-first-byte", f"nothing within {self.timeouts.first_byte:.0f}s")
            return HTTPFailure("timeout-stall", f"no byte for {self.timeouts.first_byte:.0f}s after {self.received} bytes")
        if isinstance(exc, http.client.IncompleteRead):
            return HTTPFailure("closed", f"connection closed mid-chunk after {self.received} bytes")
        if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
            return HTTPFailure("closed", f"{type(exc).__name__} after {self.received} bytes")
        if isinstance(exc, (http.client.HTTPException, ValueError)):
            return HTTPFailure("protocol", f"{type(exc).__name__}: {str(exc)[:120]}")
        return HTTPFailure("closed", f"{type(exc).__name__}: {str(exc)[:120]}")

    def open(self, method: str, path: str, body: dict | None = None, accept: str = "*/*") -> int:
        """Connect, send, wait for the status line and headers; returns the status (200, else raises)."""
        self._watchdog.start()
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        kwargs = {"context": ssl.create_default_context()} if self.scheme == "https" else {}
        self.conn = cls(self.host, self.port, timeout=min(self.timeouts.connect, self.budget), **kwargs)
        try:
            self.conn.connect()
        except (socket.timeout, TimeoutError):
            raise (self._timed_out() if self.expired else
                   HTTPFailure("timeout-connect", f"no connection to {self.host}:{self.port} within {self.timeouts.connect:.0f}s"))
        except (OSError, ssl.SSLError) as exc:
            raise HTTPFailure("connect", f"{self.host}:{self.port}: {getattr(exc, 'strerror', None) or exc}") from None
        self.sock = self.conn.sock
        self.sock.settimeout(self.timeouts.first_byte)
        if self.expired:        # the watchdog fired while connecting
            self._expire()
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, self.prefix + path, body=data, headers=headers)
            self.response = self.conn.getresponse()
        except Exception as exc:  # noqa: BLE001 - every socket/HTTP failure becomes a named kind
            raise self._translate(exc) from None
        if self.response.status != 200:
            try:
                snippet = self.response.read(400)
            except Exception:  # noqa: BLE001 - the status is what matters here
                snippet = b""
            raise HTTPFailure("http-status", f"HTTP {self.response.status}: {_one_line(snippet)}",
                              status=self.response.status)
        return self.response.status

    def _decoder(self):
        """A decompressor for the response's Content-Encoding (gzip, deflate), None for identity.
        We ask for identity, but proxies compress regardless."""
        encoding = (self.response.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding in ("", "identity"):
            return None
        if encoding in ("gzip", "x-gzip", "deflate"):
            return zlib.decompressobj(wbits=47)      # 32 + 15: gzip or zlib header, detected
        raise HTTPFailure("protocol", f"Content-Encoding {encoding!r}, which verify cannot decode")

    def _read(self, n: int, whole: bool) -> bytes:
        try:
            data = self.response.read(n) if whole else self.response.read1(n)
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc) from None
        if self.expired:
            raise self._timed_out()
        self.received += len(data)
        return data

    @staticmethod
    def _inflate(decoder, data: bytes) -> bytes:
        try:
            out = decoder.decompress(data, MAX_BODY + 1)
        except zlib.error as exc:
            raise HTTPFailure("protocol", f"a compressed body that does not decompress: {exc}") from None
        if len(out) > MAX_BODY or decoder.unconsumed_tail:
            raise HTTPFailure("too-large", f"a decompressed body larger than {MAX_BODY} bytes")
        return out

    def lines(self) -> Iterator[bytes]:
        """The body, line by line (b"" never yielded); raises HTTPFailure when cut or late."""
        assert self.response is not None
        decoder = self._decoder()
        buffer = b""
        while True:
            if decoder is None:
                try:
                    line = self.response.readline(MAX_LINE + 1)
                except Exception as exc:  # noqa: BLE001
                    raise self._translate(exc) from None
                if self.expired:
                    raise self._timed_out()
                self.received += len(line)
            else:
                while b"\n" not in buffer and len(buffer) <= MAX_LINE:
                    data = self._read(1 << 16, whole=False)
                    if not data:
                        break
                    buffer += self._inflate(decoder, data)
                line, sep, buffer = buffer.partition(b"\n")
                line += sep
            if not line:
                return
            if len(line) > MAX_LINE:
                raise HTTPFailure("too-large", f"a line longer than {MAX_LINE} bytes")
            yield line

    def body(self) -> bytes:
        assert self.response is not None
        decoder = self._decoder()
        data = self._read(MAX_BODY + 1, whole=True)
        if len(data) > MAX_BODY:
            raise HTTPFailure("too-large", f"a body larger than {MAX_BODY} bytes")
        return data if decoder is None else self._inflate(decoder, data) + decoder.flush()

    def close(self) -> None:
        self._watchdog.cancel()
        if self.conn is not None:
            self.conn.close()

    def __enter__(self) -> "Exchange":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def get(base_url: str, path: str, timeouts: Timeouts, run: Deadline | None = None, body: dict | None = None) -> bytes:
    """A whole GET (or, with a body, POST) answered 200; raises HTTPFailure."""
    with Exchange(base_url, timeouts, run, timeouts.get) as ex:
        ex.open("POST" if body is not None else "GET", path, body)
        return ex.body()


def get_json(base_url: str, path: str, timeouts: Timeouts, run: Deadline | None = None, body: dict | None = None):
    """A JSON document; raises HTTPFailure("not-json", ...) when the body is not JSON."""
    data = get(base_url, path, timeouts, run, body)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPFailure("not-json", f"{path} is not JSON ({type(exc).__name__}): {_one_line(data, 80)!r}") from None
