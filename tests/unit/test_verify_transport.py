"""verify's HTTP layer against raw sockets that send exactly the bytes under test."""

from __future__ import annotations

import gzip
import socket
import threading
import time

import pytest

from dsv4_images.errors import UserError
from dsv4_images.verify import client, transport
from dsv4_images.verify.transport import Deadline, HTTPFailure, Timeouts


class Raw:
    """Accepts connections and answers each with `reply(conn)` (raw bytes, any misbehaviour)."""

    def __init__(self, reply):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.reply, self.stop = reply, threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                self.read_request(conn)
                self.reply(conn, self.stop)
            except OSError:
                pass
            finally:
                conn.close()

    @staticmethod
    def read_request(conn) -> None:
        """All of it: closing with unread bytes would reset the connection before the reply is read."""
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        headers, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in headers.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += conn.recv(65536)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.sock.close()


def head(extra: str = "", status: str = "200 OK") -> bytes:
    return f"HTTP/1.1 {status}\r\nConnection: close\r\n{extra}\r\n".encode()


SSE = "Content-Type: text/event-stream\r\n"
EVENT = b'data: {"choices": [{"index": 0, "text": " able", "token_ids": [7], "finish_reason": "length"}]}\n\n'


def completion(url: str, **timeouts) -> client.Result:
    return client.send(url, "m", client.Request("r", "p", kind="completion"), Timeouts(**timeouts))


def test_gzip_streams_are_decoded():
    body = gzip.compress(EVENT + b"data: [DONE]\n\n")
    with Raw(lambda c, _: c.sendall(head(SSE + "Content-Encoding: gzip\r\n") + body)) as s:
        r = completion(s.url)
    assert r.error is None and r.content == " able" and r.token_ids == [7]


def test_an_encoding_verify_cannot_decode_is_named():
    with Raw(lambda c, _: c.sendall(head(SSE + "Content-Encoding: br\r\n") + b"\x8b\x00")) as s:
        r = completion(s.url)
    assert r.error_kind == "protocol" and "Content-Encoding 'br'" in r.error


def test_a_broken_chunk_size_is_a_protocol_failure():
    with Raw(lambda c, _: c.sendall(head(SSE + "Transfer-Encoding: chunked\r\n") + b"zz\r\nxx\r\n")) as s:
        r = completion(s.url)
    assert r.error_kind in ("protocol", "closed"), r.error


def test_a_line_longer_than_the_limit_is_refused():
    def reply(c, _):
        c.sendall(head(SSE) + b"data: " + b"x" * (transport.MAX_LINE + 10))
    with Raw(reply) as s:
        r = completion(s.url)
    assert r.error_kind == "too-large"


def test_garbage_instead_of_a_status_line():
    with Raw(lambda c, _: c.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")) as s:
        r = completion(s.url)
    assert r.error_kind == "protocol" and "BadStatusLine" in r.error


def test_a_trickle_is_cut_at_the_request_timeout_not_the_gap_timeout():
    def reply(c, stop):
        c.sendall(head(SSE))
        while not stop.is_set():
            c.sendall(b"x")
            time.sleep(0.1)
    with Raw(reply) as s:
        r = completion(s.url, first_byte=1, request=1.5)
    assert r.error_kind == "timeout-request", r.error     # every gap is 0.1 s, under the 1 s gap bound


def test_the_run_deadline_bounds_a_request_and_refuses_new_ones():
    def reply(c, stop):
        c.sendall(head(SSE))
        stop.wait(30)
    with Raw(reply) as s:
        deadline = Deadline(1.0)
        r = client.send(s.url, "m", client.Request("r", "p"), Timeouts(first_byte=20, request=20), deadline)
        assert r.error_kind == "timeout-run"
        results, _ = client.run(s.url, "m", [client.Request("a", "p")], 1, Timeouts(), deadline=deadline)
    assert results[0].error_kind == "timeout-run" and results[0].error.startswith("not sent")


def test_http_errors_keep_the_status_and_the_body():
    body = b'{"object": "error", "message": "This model\'s maximum context length is 1024 tokens"}'
    with Raw(lambda c, _: c.sendall(head(f"Content-Length: {len(body)}\r\n", "400 Bad Request") + body)) as s:
        with pytest.raises(HTTPFailure) as exc:
            transport.get(s.url, "/v1/models", Timeouts())
    assert exc.value.status == 400 and "maximum context length" in exc.value.detail


@pytest.mark.parametrize("url", ["ftp://h", "http://", "http://h:0x", "localhost:8000"])
def test_urls_that_are_not_http_are_user_errors(url):
    with pytest.raises(UserError):
        transport.split_url(url)


def test_url_prefixes_are_kept():
    assert transport.split_url("https://gw.example/team/vllm/") == ("https", "gw.example", 443, "/team/vllm")


@pytest.mark.parametrize("field", ["connect", "first_byte", "request", "run"])
@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_timeouts_must_be_positive_and_finite(field, value):
    with pytest.raises(UserError):
        Timeouts(**{field: value}).check()
