"""An HTTP proxy that forwards to one server, then, from a chosen /metrics scrape on, to another
(test-only). Put a healthy MTP server first and one with a broken MTP head second, and verify
sees the drafter degrade in the middle of a run: acceptance collapsing between requests.

verify reads /metrics in pairs around every measured batch (canary windows and phases), so an
even-numbered scrape (0-based) opens a window: switching there keeps every window on one server.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.forward(b"")

    def do_POST(self) -> None:
        self.forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def forward(self, body: bytes) -> None:
        proxy = self.server.proxy
        upstream = proxy.upstream_for(self.path)
        parts = urllib.parse.urlsplit(upstream)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=900)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept", "accept-encoding")}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        response = conn.getresponse()
        self.send_response(response.status)
        for key in ("Content-Type", "Content-Encoding"):
            if response.getheader(key):
                self.send_header(key, response.getheader(key))
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        while True:
            data = response.read1(65536)
            if not data:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        conn.close()


class SwitchingProxy:
    def __init__(self, first: str, second: str, switch_at_scrape: int):
        if switch_at_scrape % 2:
            raise ValueError("switch at an even-numbered scrape, where a window opens")
        self.first, self.second, self.switch_at = first, second, switch_at_scrape
        self.scrapes = 0
        self.switched = False
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.proxy = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def upstream_for(self, path: str) -> str:
        with self.lock:
            if path == "/metrics":
                if self.scrapes == self.switch_at:
                    self.switched = True
                self.scrapes += 1
            return self.second if self.switched else self.first

    def __enter__(self) -> "SwitchingProxy":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
