"""An httpx transport that dials only vetted IP addresses, within a per-call deadline.

:class:`GuardedBackend` is an httpcore network backend. For every new TCP
connection it resolves the host once (bounded by the connect timeout), refuses
the connection if ANY resolved address fails the :class:`~clmlf.fetch.net_guard.AddressPolicy`,
and connects to the vetted address itself. The HTTP layer above still uses the
original host name for the ``Host`` header, TLS SNI and certificate checks, so
nothing changes for the server, but no second DNS lookup ever happens (no DNS
rebinding). Redirects open new connections, so they pass the same check.

Every socket operation is also clamped to the calling thread's deadline
(:class:`Deadline`), which makes a fetch's total timeout a hard bound even
for a server that trickles one byte at a time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import httpcore
import httpx

from clmlf.fetch.net_guard import AddressPolicy, BlockedAddress, IPAddress

Resolver = Callable[[str, int], list[str]]

_MIN_TIMEOUT = 0.001


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses ``getaddrinfo`` returns for ``host`` (TCP), in resolver order, de-duplicated."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Deadline:
    """A per-thread absolute deadline (``time.monotonic``) that socket timeouts are clamped to."""

    def __init__(self) -> None:
        self._local = threading.local()

    @contextlib.contextmanager
    def until(self, deadline: float) -> Iterator[None]:
        previous = getattr(self._local, "at", None)
        self._local.at = deadline
        try:
            yield
        finally:
            self._local.at = previous

    def clamp(self, timeout: float | None) -> float | None:
        """``timeout`` shortened to the time left before this thread's deadline (never <= 0)."""
        at = getattr(self._local, "at", None)
        if at is None:
            return timeout
        left = max(at - time.monotonic(), _MIN_TIMEOUT)
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose reads, writes and TLS handshake respect the :class:`Deadline`."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: Deadline):
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.clamp(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.clamp(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, self._deadline.clamp(timeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolve once, vet every address, dial the vetted address (see the module docstring)."""

    def __init__(
        self,
        policy: AddressPolicy,
        deadline: Deadline,
        resolver: Resolver = system_resolver,
        dns_workers: int = 4,
    ):
        self._policy = policy
        self._deadline = deadline
        self._resolver = resolver
        self._inner = httpcore.SyncBackend()
        # getaddrinfo has no timeout of its own: run it on a small pool and stop waiting at the deadline.
        self._dns = ThreadPoolExecutor(max_workers=dns_workers, thread_name_prefix="clmlf-dns")

    def vetted_addresses(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        """Resolve ``host``; raise :class:`BlockedAddress` if any address is refused."""
        with contextlib.suppress(ValueError):
            literal = ipaddress.ip_address(host)
            if not self._policy.is_allowed(literal):
                raise BlockedAddress(host, str(literal))
            return [literal]
        future = self._dns.submit(self._resolver, host, port)
        try:
            answers = future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            raise httpcore.ConnectTimeout(f"DNS lookup of {host!r} timed out") from None
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from None
        addresses = [ipaddress.ip_address(a) for a in answers]
        if not addresses:
            raise httpcore.ConnectError(f"no addresses for {host!r}")
        for address in addresses:
            if not self._policy.is_allowed(address):
                raise BlockedAddress(host, str(address))
        return addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.vetted_addresses(host, port, self._deadline.clamp(timeout))
        last_error: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(
                    str(address), port, self._deadline.clamp(timeout), local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        assert last_error is not None
        raise last_error

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise httpcore.ConnectError("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        self._dns.shutdown(wait=False, cancel_futures=True)


# httpcore -> httpx exceptions, most specific first.
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core_type, httpx_type in _EXCEPTIONS:
            if isinstance(exc, core_type):
                raise httpx_type(str(exc)) from exc
        raise


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, inner: Any):
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx_errors():
            yield from self._inner

    def close(self) -> None:
        if hasattr(self._inner, "close"):
            self._inner.close()


class GuardedTransport(httpx.BaseTransport):
    """A pooled HTTP/1.1 transport over :class:`GuardedBackend` (thread-safe, like httpx's own)."""

    def __init__(self, backend: GuardedBackend, limits: httpx.Limits, ssl_context: ssl.SSLContext):
        self._backend = backend
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            core_response = self._pool.handle_request(core_request)
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_ResponseStream(core_response.stream),
            extensions=core_response.extensions,
        )

    def close(self) -> None:
        self._pool.close()
        self._backend.close()
