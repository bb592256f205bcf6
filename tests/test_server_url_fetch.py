"""Opt-in URL fetching: private, loopback, link-local and reserved targets are refused (also after a
redirect), unresolvable hosts and failed fetches answer their own 4xx codes, and a public fetch works.

The positive path needs a web server, and the only one a test may reach is on 127.0.0.1: the server
under test runs with the test-only setting ``MASKLET_URL_FETCH_ALLOW_LOOPBACK=1``, which lets fetches
reach loopback (and nothing else that is private). Host names are resolved by a fake resolver in the
unit tests, so no test sends a DNS query.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import threading
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from PIL import Image

from masklet.server.errors import ApiError
from masklet.server.fetch import check_target, fetch_url, forbidden_reason
from masklet.server.settings import Settings
from masklet.synthetic import make_scene
from reference.server import ServerProcess

LIMIT = 1_000_000


@pytest.mark.parametrize(
    "address, reason",
    [
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("::ffff:10.0.0.1", "private"),
        ("100.64.0.1", "not globally routable"),
        ("fd00::1", "private"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_forbidden_reason(address, reason):
    assert forbidden_reason(address) == reason
    assert forbidden_reason(address, allow_loopback=True) == (None if reason == "loopback" else reason)


def _check(url: str, addresses: list[str] | Exception, **settings) -> tuple:
    async def resolve(host: str, port: int) -> list[str]:
        if isinstance(addresses, Exception):
            raise addresses
        return addresses

    return asyncio.run(check_target(url, Settings(allow_url_fetch=True, **settings), resolve))


def _code(fn, *args) -> tuple[int, str]:
    with pytest.raises(ApiError) as err:
        fn(*args)
    return err.value.status, err.value.code


def test_check_target_resolves_and_checks_every_address():
    import socket

    assert _check("https://images.example.com/a.png", ["93.184.216.34"]) == (
        "https",
        "images.example.com",
        443,
        "93.184.216.34",
    )
    assert _code(_check, "http://nowhere.invalid/a.png", socket.gaierror(-2, "Name or service not known")) == (
        400,
        "url_unresolvable",
    )
    assert _code(_check, "http://empty.example/a.png", []) == (400, "url_unresolvable")
    # one private address among public ones is enough to refuse (a rebinding host)
    assert _code(_check, "http://mixed.example/a.png", ["93.184.216.34", "10.0.0.7"]) == (403, "url_forbidden_target")
    assert _code(_check, "http://localhost:8080/", ["127.0.0.1", "::1"]) == (403, "url_forbidden_target")
    assert _code(_check, "http://127.0.0.1/", []) == (403, "url_forbidden_target")
    assert _code(_check, "http://[::ffff:192.168.0.1]/", []) == (403, "url_forbidden_target")
    for bad in (
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "http:///nohost",
        "http://u:p@example.com/",
        "http://example.com:99999/",
    ):
        assert _code(_check, bad, ["93.184.216.34"]) == (400, "invalid_url"), bad


def test_fetch_disabled_by_default():
    assert _code(lambda: asyncio.run(fetch_url("http://93.184.216.34/a.png", Settings()))) == (
        403,
        "url_fetch_disabled",
    )
    assert _code(lambda: asyncio.run(fetch_url("http://10.0.0.1/a.png", Settings()))) == (403, "url_fetch_disabled")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    png = b""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):  # the server under test gave up (size, time): expected
            pass

    def _answer(self) -> None:
        routes = {
            "/scene.png": (200, {"Content-Type": "image/png"}, self.png),
            "/redirect-private": (302, {"Location": "http://10.1.2.3/scene.png"}, b""),
            "/redirect-metadata": (307, {"Location": "http://169.254.169.254/latest/meta-data"}, b""),
            "/redirect-local": (302, {"Location": "/scene.png"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/big": (200, {"Content-Type": "image/png"}, b"\0" * (LIMIT + 10)),
            "/big-chunked": (200, {"Content-Type": "image/png"}, b""),  # no length: counted while read
        }
        if self.path == "/slow":
            time.sleep(4)
        status, headers, body = routes.get(self.path, (404, {}, b"no"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if self.path == "/big-chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(20):
                self.wfile.write(b"10000\r\n" + b"\0" * 0x10000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def web():
    buf = io.BytesIO()
    Image.fromarray(make_scene(21, size=(64, 80)).image).save(buf, "PNG")
    _Handler.png = buf.getvalue()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def server():
    env = {
        "MASKLET_ALLOW_URL_FETCH": "1",
        "MASKLET_URL_FETCH_ALLOW_LOOPBACK": "1",
        "MASKLET_URL_FETCH_TIMEOUT_S": "2",
        "MASKLET_MAX_BODY_BYTES": str(LIMIT),
    }
    proc = ServerProcess(env=env).start()
    yield proc
    proc.stop()


def test_url_fetch_end_to_end(server, web):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        raw = http.post("/v1/images", content=_Handler.png, headers={"content-type": "image/png"})
        assert raw.status_code == 201
        for path in ("/scene.png", "/redirect-local"):
            r = http.post("/v1/images", json={"url": web + path})
            assert r.status_code == 201, r.text
            assert r.json()["imageId"] == raw.json()["imageId"] and r.json()["cached"]
        a = http.post(
            f"/v1/images/{raw.json()['imageId']}/predict", json={"pointCoords": [[30, 20]], "pointLabels": [1]}
        )
        assert a.status_code == 200 and np.asarray(a.json()["scores"]).shape == (3,)
        cases = [
            ("http://10.0.0.1/a.png", 403, "url_forbidden_target"),
            ("http://169.254.169.254/latest/meta-data", 403, "url_forbidden_target"),
            ("http://[fe80::1]/a.png", 403, "url_forbidden_target"),
            (web + "/redirect-private", 403, "url_forbidden_target"),
            (web + "/redirect-metadata", 403, "url_forbidden_target"),
            (web + "/loop", 400, "url_fetch_failed"),
            (web + "/missing", 400, "url_fetch_failed"),
            (web + "/big", 413, "payload_too_large"),
            (web + "/big-chunked", 413, "payload_too_large"),
            (web + "/slow", 400, "url_fetch_failed"),
            ("gopher://127.0.0.1/", 400, "invalid_url"),
        ]
        for url, status, code in cases:
            r = http.post("/v1/images", json={"url": url}, headers={"X-Request-ID": "u1"})
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (url, r.text)
            assert r.json()["error"]["requestId"] == "u1"
        r = http.post("/v1/images", json={"url": 7})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_input"
        assert http.get("/health").status_code == 200
