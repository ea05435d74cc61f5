"""Image fetcher and SSRF guard, against real HTTP servers on 127.0.0.1 / 127.0.0.2 (no mocks).

Servers count the requests they receive, so every "refused" test also proves that
nothing reached the refused address.
"""

from __future__ import annotations

import base64
import io
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from clmlf.fetch.image_fetch import FetchConfig, ImageFetcher, ImageFetchError, decode_base64_image
from clmlf.fetch.net_guard import AddressPolicy, check_url, is_public_address, parse_ip_literal
from contract.posts import Post

ALLOWED_IP = "127.0.0.2"  # tests allow this loopback address explicitly; 127.0.0.1 stays refused
GUARDED = {"allow_networks": (f"{ALLOWED_IP}/32",), "backoff_initial": 0.01, "backoff_max": 0.05}


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png_bytes()

Handler = Callable[[BaseHTTPRequestHandler, int], None]


@dataclass
class Server:
    """A threaded HTTP server whose behaviour per path is a function; it records every request."""

    host: str
    tls: ssl.SSLContext | None = None
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                with server._lock:
                    server.requests.append((self.path, self.headers.get("Host", "")))
                    count = sum(1 for p, _ in server.requests if p == self.path)
                handler = server.routes.get(self.path.split("?")[0])
                if handler is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    handler(self, count)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer((self.host, 0), _Handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str, host: str | None = None) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def paths(self) -> list[str]:
        with self._lock:
            return [p for p, _ in self.requests]


def send(status: int, body: bytes = b"", content_type: str = "image/png", headers: dict | None = None,
         length: bool = True) -> Handler:
    def handler(req: BaseHTTPRequestHandler, _count: int) -> None:
        req.send_response(status)
        req.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            req.send_header(key, value)
        if length:
            req.send_header("Content-Length", str(len(body)))
        else:
            req.send_header("Connection", "close")
            req.close_connection = True
        req.end_headers()
        req.wfile.write(body)

    return handler


def redirect(location: str, status: int = 302) -> Handler:
    return send(status, headers={"Location": location}, content_type="text/plain")


@pytest.fixture
def blocked_server() -> Iterator[Server]:
    """On 127.0.0.1: every test asserts it never receives a request."""
    server = Server("127.0.0.1")
    server.routes["/img.png"] = send(200, PNG)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def allowed_server() -> Iterator[Server]:
    server = Server(ALLOWED_IP)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def guarded() -> Iterator[ImageFetcher]:
    with ImageFetcher(FetchConfig(**GUARDED)) as fetcher:
        yield fetcher


def reason_of(fetcher: ImageFetcher, url: str) -> str:
    with pytest.raises(ImageFetchError) as info:
        fetcher.fetch(url)
    return info.value.reason


# -- SSRF: every spelling of a non-public address is refused before any request ---------------

SSRF_HOSTS = [
    "127.0.0.1",
    "2130706433",  # decimal
    "0x7f000001",  # hex
    "0x7f.0.0.1",
    "0177.0.0.1",  # octal
    "0177.0.0.01",
    "127.1",  # short form
    "127.0.1",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",  # IPv4-compatible
    "[64:ff9b::7f00:1]",  # NAT64
    "[2002:7f00:1::]",  # 6to4
    "0.0.0.0",
    "0",
    "[::]",
    "localhost",
    "LOCALHOST.",
    "foo.localhost",
    "127.0.0.1.",  # trailing dot
    "127\u30020\u30020\u30021",  # ideographic full stops: IDNA turns them into dots
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits
]


@pytest.mark.parametrize("host", SSRF_HOSTS)
def test_ssrf_forms_are_blocked_and_server_gets_nothing(host: str, blocked_server: Server) -> None:
    with ImageFetcher(FetchConfig()) as fetcher:
        assert reason_of(fetcher, blocked_server.url("/img.png", host=host)) == "blocked_address"
    assert blocked_server.paths() == []


@pytest.mark.parametrize(
    "address",
    ["10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "224.0.0.1",
     "240.0.0.1", "255.255.255.255", "198.18.0.1", "fe80::1", "fc00::1", "fec0::1", "ff02::1",
     "::ffff:10.0.0.1", "::ffff:0:a00:1", "64:ff9b::a00:1", "2002:a00:1::1", "2001:db8::1",
     "2001:0:4136:e378:8000:63bf:3fff:fdd2"],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    ip = parse_ip_literal(address)
    assert ip is not None
    assert not is_public_address(ip)
    assert not AddressPolicy().is_allowed(ip)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    ip = parse_ip_literal(address)
    assert ip is not None and is_public_address(ip)


def test_loose_ipv4_parsing_matches_inet_aton() -> None:
    assert str(parse_ip_literal("2130706433")) == "127.0.0.1"
    assert str(parse_ip_literal("0x7f.1")) == "127.0.0.1"
    assert str(parse_ip_literal("10.1")) == "10.0.0.1"
    assert str(parse_ip_literal("0300.0250.1")) == "192.168.0.1"
    assert parse_ip_literal("example.com") is None
    assert parse_ip_literal("1.2.3.4.5") is None
    assert parse_ip_literal("256.1.1.1") is None
    assert parse_ip_literal("09.1.1.1") is None  # 9 is not an octal digit: a name, not an address


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://example.com/", "http://", "http:///x",
     "http://user:pw@example.com/a.png", "http://example.com@127.0.0.1/", "http://a\\@example.com/",
     "http://exa mple.com/", "http://example.com:0/", "http://example.com:99999/", "javascript:alert(1)", "",
     "http://xn--/", "http://[zz::1]/", "http://127.0.0.1%2f@example.com/"],
)
def test_bad_urls_are_refused(url: str, guarded: ImageFetcher) -> None:
    assert reason_of(guarded, url) == "bad_url"


def test_allow_private_turns_the_guard_off(blocked_server: Server) -> None:
    with ImageFetcher(FetchConfig(allow_private=True)) as fetcher:
        assert fetcher.fetch(blocked_server.url("/img.png")) == PNG
        assert fetcher.fetch(blocked_server.url("/img.png", host="2130706433")) == PNG


def test_name_resolving_to_loopback_is_refused(blocked_server: Server) -> None:
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return {"images.example.com": ["127.0.0.1"], "cdn.example.com": ["93.184.216.34", "127.0.0.1"]}[host]

    with ImageFetcher(FetchConfig(), resolver=resolver) as fetcher:
        for host in ("images.example.com", "cdn.example.com"):  # the second: ANY bad address refuses
            assert reason_of(fetcher, blocked_server.url("/img.png", host=host)) == "blocked_address"
    assert asked == ["images.example.com", "cdn.example.com"]
    assert blocked_server.paths() == []


def test_localhost_from_etc_hosts_is_refused(blocked_server: Server) -> None:
    # the system resolver: 'localhost' is both a reserved name and in /etc/hosts
    with ImageFetcher(FetchConfig()) as fetcher:
        assert reason_of(fetcher, blocked_server.url("/img.png", host="localhost")) == "blocked_address"
    assert blocked_server.paths() == []


def test_connects_to_vetted_address_with_original_host_header(allowed_server: Server) -> None:
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return [ALLOWED_IP]

    allowed_server.routes["/img.png"] = send(200, PNG)
    with ImageFetcher(FetchConfig(**GUARDED), resolver=resolver) as fetcher:
        assert fetcher.fetch(allowed_server.url("/img.png", host="img.example.com")) == PNG
        assert fetcher.fetch(allowed_server.url("/img.png", host="img.example.com")) == PNG
    assert allowed_server.requests == [("/img.png", f"img.example.com:{allowed_server.port}")] * 2
    assert calls == ["img.example.com"]  # one lookup; the second fetch reused the pooled connection


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a certificate")
def test_https_dials_vetted_address_with_original_sni_and_certificate(tmp_path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=img.example.com",
         "-addext", "subjectAltName=DNS:img.example.com"],
        check=True, capture_output=True,
    )
    server_names: list[str | None] = []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    tls.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    server = Server(ALLOWED_IP, tls=tls)
    server.routes["/img.png"] = send(200, PNG)
    server.start()
    try:
        config = FetchConfig(ca_file=str(cert), retries=0, **GUARDED)
        with ImageFetcher(config, resolver=lambda host, port: [ALLOWED_IP]) as fetcher:
            assert fetcher.fetch(server.url("/img.png", host="img.example.com")) == PNG
            # the certificate names img.example.com, not the address we dialed
            assert reason_of(fetcher, server.url("/img.png")) == "connection_error"
    finally:
        server.stop()
    assert server_names[0] == "img.example.com"
    assert server.requests == [("/img.png", f"img.example.com:{server.port}")]


# -- redirects ----------------------------------------------------------------------------------

def test_redirect_to_refused_address_is_blocked(allowed_server: Server, blocked_server: Server,
                                                guarded: ImageFetcher) -> None:
    allowed_server.routes["/abs"] = redirect(blocked_server.url("/img.png"))
    allowed_server.routes["/decimal"] = redirect(blocked_server.url("/img.png", host="2130706433"))
    for path in ("/abs", "/decimal"):
        assert reason_of(guarded, allowed_server.url(path)) == "blocked_address"
    assert allowed_server.paths() == ["/abs", "/decimal"]
    assert blocked_server.paths() == []


def test_redirect_to_name_resolving_to_refused_address(allowed_server: Server, blocked_server: Server) -> None:
    def resolver(host: str, port: int) -> list[str]:
        return {"good.example.com": [ALLOWED_IP], "evil.example.com": ["127.0.0.1"]}[host]

    allowed_server.routes["/r"] = redirect(blocked_server.url("/img.png", host="evil.example.com"))
    with ImageFetcher(FetchConfig(**GUARDED), resolver=resolver) as fetcher:
        assert reason_of(fetcher, allowed_server.url("/r", host="good.example.com")) == "blocked_address"
    assert blocked_server.paths() == []


def test_relative_redirects_are_followed(allowed_server: Server, guarded: ImageFetcher) -> None:
    allowed_server.routes["/a"] = redirect("/b", 301)
    allowed_server.routes["/b"] = redirect("c", 307)
    allowed_server.routes["/c"] = send(200, PNG)
    assert guarded.fetch(allowed_server.url("/a")) == PNG
    assert allowed_server.paths() == ["/a", "/b", "/c"]


def test_more_than_three_redirects_fail(allowed_server: Server, guarded: ImageFetcher) -> None:
    for i in range(5):
        allowed_server.routes[f"/r{i}"] = redirect(f"/r{i + 1}")
    allowed_server.routes["/r3"] = redirect("/img.png")
    allowed_server.routes["/img.png"] = send(200, PNG)
    assert guarded.fetch(allowed_server.url("/r1")) == PNG  # exactly 3 redirects: fine
    assert reason_of(guarded, allowed_server.url("/r0")) == "too_many_redirects"
    assert allowed_server.paths()[4:] == ["/r0", "/r1", "/r2", "/r3"]  # the 4th redirect is not followed


def test_redirect_to_other_scheme_is_refused(allowed_server: Server, guarded: ImageFetcher) -> None:
    allowed_server.routes["/r"] = redirect("file:///etc/passwd")
    assert reason_of(guarded, allowed_server.url("/r")) == "bad_url"


# -- content type, size, timeouts, retries ------------------------------------------------------

def test_html_is_refused(allowed_server: Server, guarded: ImageFetcher) -> None:
    allowed_server.routes["/page"] = send(200, b"<html></html>", content_type="text/html; charset=utf-8")
    allowed_server.routes["/none"] = send(200, PNG, content_type="")
    assert reason_of(guarded, allowed_server.url("/page")) == "bad_content_type"
    assert reason_of(guarded, allowed_server.url("/none")) == "bad_content_type"


def test_image_content_type_with_parameters_is_accepted(allowed_server: Server, guarded: ImageFetcher) -> None:
    allowed_server.routes["/img"] = send(200, PNG, content_type="Image/PNG; q=1")
    assert guarded.fetch(allowed_server.url("/img")) == PNG


def test_body_over_cap_fails_while_streaming(allowed_server: Server) -> None:
    allowed_server.routes["/big"] = send(200, b"x" * 5000, length=False)
    allowed_server.routes["/fits"] = send(200, b"x" * 1000, length=False)
    with ImageFetcher(FetchConfig(max_bytes=4096, **GUARDED)) as fetcher:
        assert reason_of(fetcher, allowed_server.url("/big")) == "too_large"
        assert fetcher.fetch(allowed_server.url("/fits")) == b"x" * 1000


def test_content_length_over_cap_fails_upfront(allowed_server: Server) -> None:
    allowed_server.routes["/big"] = send(200, b"x" * 5000)
    with ImageFetcher(FetchConfig(max_bytes=4096, **GUARDED)) as fetcher:
        assert reason_of(fetcher, allowed_server.url("/big")) == "too_large"


def test_50mb_image_is_refused_without_reading_it(allowed_server: Server, guarded: ImageFetcher) -> None:
    sent = {"bytes": 0}
    size = 50 * 1024 * 1024

    def huge(req: BaseHTTPRequestHandler, _count: int) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "image/jpeg")
        if req.path.endswith("declared"):
            req.send_header("Content-Length", str(size))
        req.send_header("Connection", "close")
        req.end_headers()
        chunk = b"\xff" * 65536
        try:
            while sent["bytes"] < size:
                req.wfile.write(chunk)
                sent["bytes"] += len(chunk)
        except OSError:
            pass  # the client hung up: what we want

    allowed_server.routes["/huge"] = huge
    assert reason_of(guarded, allowed_server.url("/huge?declared")) == "too_large"
    sent["bytes"] = 0
    assert reason_of(guarded, allowed_server.url("/huge?streamed")) == "too_large"
    time.sleep(0.2)  # let the server notice the closed connection
    assert sent["bytes"] < size // 2


def test_slow_server_hits_total_timeout(allowed_server: Server) -> None:
    release = threading.Event()

    def trickle(req: BaseHTTPRequestHandler, _count: int) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "image/png")
        req.send_header("Content-Length", "1000")
        req.end_headers()
        for _ in range(1000):  # one byte every 50 ms: never idle long enough for the read timeout
            if release.wait(0.05):
                return
            req.wfile.write(b"x")
            req.wfile.flush()

    allowed_server.routes["/slow"] = trickle
    config = FetchConfig(total_timeout=0.5, read_timeout=5, retries=2, **GUARDED)
    try:
        with ImageFetcher(config) as fetcher:
            started = time.monotonic()
            assert reason_of(fetcher, allowed_server.url("/slow")) == "timeout"
            elapsed = time.monotonic() - started
    finally:
        release.set()
    assert elapsed < 5.0  # a correctness bound, not a speed claim: without the deadline this takes 50 s
    assert allowed_server.paths() == ["/slow"]  # the budget was spent: no retry was started


def test_unresponsive_server_times_out_within_budget(allowed_server: Server) -> None:
    release = threading.Event()
    allowed_server.routes["/hang"] = lambda req, _c: release.wait(10)
    try:
        with ImageFetcher(FetchConfig(total_timeout=0.5, retries=3, **GUARDED)) as fetcher:
            started = time.monotonic()
            assert reason_of(fetcher, allowed_server.url("/hang")) == "timeout"
            assert time.monotonic() - started < 5.0  # the server holds the request 10 s
    finally:
        release.set()
    assert allowed_server.paths() == ["/hang"]


def test_read_timeout_is_retried_within_the_budget(allowed_server: Server) -> None:
    release = threading.Event()

    def stall_once(req: BaseHTTPRequestHandler, count: int) -> None:
        if count == 1:
            release.wait(10)
            return
        send(200, PNG)(req, count)

    allowed_server.routes["/stall"] = stall_once
    try:
        with ImageFetcher(FetchConfig(read_timeout=0.3, total_timeout=5, **GUARDED)) as fetcher:
            assert fetcher.fetch(allowed_server.url("/stall")) == PNG
    finally:
        release.set()
    assert allowed_server.paths() == ["/stall", "/stall"]


def test_503_then_200_is_retried(allowed_server: Server, guarded: ImageFetcher) -> None:
    def flaky(req: BaseHTTPRequestHandler, count: int) -> None:
        (send(503, b"busy", content_type="text/plain") if count == 1 else send(200, PNG))(req, count)

    allowed_server.routes["/flaky"] = flaky
    assert guarded.fetch(allowed_server.url("/flaky")) == PNG
    assert allowed_server.paths() == ["/flaky", "/flaky"]


def test_persistent_5xx_gives_up_after_the_retries(allowed_server: Server, guarded: ImageFetcher) -> None:
    allowed_server.routes["/down"] = send(502, b"", content_type="text/plain")
    with pytest.raises(ImageFetchError) as info:
        guarded.fetch(allowed_server.url("/down"))
    assert (info.value.reason, info.value.status) == ("http_error", 502)
    assert allowed_server.paths() == ["/down"] * 3  # 1 + retries=2


def test_404_is_not_retried(allowed_server: Server, guarded: ImageFetcher) -> None:
    assert reason_of(guarded, allowed_server.url("/missing")) == "http_error"
    assert allowed_server.paths() == ["/missing"]


def test_connection_refused_is_connection_error(guarded: ImageFetcher) -> None:
    probe = Server(ALLOWED_IP)
    probe.start()
    url = probe.url("/img.png")
    probe.stop()  # nothing listens on that port any more
    assert reason_of(guarded, url) == "connection_error"


def test_concurrent_fetches_share_one_fetcher(allowed_server: Server, guarded: ImageFetcher) -> None:
    bodies = {f"/img{i}": bytes([i]) * (100 + i) for i in range(16)}
    for path, body in bodies.items():
        allowed_server.routes[path] = send(200, body)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(zip(bodies, pool.map(lambda p: guarded.fetch(allowed_server.url(p)), bodies), strict=True))
    assert results == bodies


# -- posts and base64 ---------------------------------------------------------------------------

def test_image_b64_wins_over_image_url(allowed_server: Server, guarded: ImageFetcher) -> None:
    allowed_server.routes["/img.png"] = send(200, b"from-url")
    encoded = base64.b64encode(PNG).decode()
    both = Post(id="1", text="t", image_b64=encoded, image_url=allowed_server.url("/img.png"))
    url_only = Post(id="2", text="t", image_url=allowed_server.url("/img.png"))
    assert guarded.post_image_bytes(both) == PNG
    assert allowed_server.paths() == []
    assert guarded.post_image_bytes(url_only) == b"from-url"
    assert guarded.post_image_bytes(Post(id="3", text="t")) is None


def test_base64_tolerates_data_uri_and_whitespace() -> None:
    encoded = base64.b64encode(PNG).decode()
    wrapped = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    assert decode_base64_image(f"data:image/png;base64,{wrapped}\n") == PNG
    assert decode_base64_image(" " + encoded + " ") == PNG


@pytest.mark.parametrize("text", ["not base64!", "abc", "YWJj$", "", "   ", "data:image/png;base64,", "é"])
def test_bad_base64(text: str) -> None:
    with pytest.raises(ImageFetchError) as info:
        decode_base64_image(text)
    assert info.value.reason == "bad_base64"


def test_base64_over_cap_is_too_large() -> None:
    encoded = base64.b64encode(b"x" * 5000).decode()
    with pytest.raises(ImageFetchError) as info:
        decode_base64_image(encoded, max_bytes=4096)
    assert info.value.reason == "too_large"
    assert decode_base64_image(encoded, max_bytes=5000) == b"x" * 5000


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        FetchConfig(allow_networks=("not-a-network",))
    with pytest.raises(ValueError):
        FetchConfig(total_timeout=0)
    with pytest.raises(ValueError):
        FetchConfig(max_bytes=-1)
    with pytest.raises(ValueError):
        FetchConfig(ca_file="/nonexistent/ca.pem")
    with pytest.raises(ValueError):
        FetchConfig(unknown_option=1)


def test_check_url_accepts_public_urls() -> None:
    parts = check_url("https://images.example.com/a.jpg?sig=1", AddressPolicy())
    assert parts.hostname == "images.example.com"
