"""Fetch a post's image bytes safely: SSRF guard, byte cap, hard total timeout, bounded retries.

Usage::

    with ImageFetcher(FetchConfig()) as fetcher:
        data = fetcher.post_image_bytes(post)   # None when the post has no image

One :class:`ImageFetcher` is shared by the whole image-stage thread pool: it
holds one pooled ``httpx.Client`` (thread-safe). Every failure raises
:class:`ImageFetchError` whose ``reason`` is one of :data:`REASONS` (a stable
metric label). Guarantees, per :meth:`ImageFetcher.fetch` call:

* only http(s) URLs whose host is (and resolves only to) public addresses are
  contacted, and the connection goes to the address that was checked
  (:mod:`clmlf.fetch.net_guard`, :mod:`clmlf.fetch.pinned_transport`); every redirect hop is
  checked the same way, at most ``max_redirects`` hops;
* the call returns within ``total_timeout`` (plus scheduling noise), retries and
  backoff sleeps included; a retry is only started when the budget still allows it;
* at most ``max_bytes`` body bytes are read: a larger ``Content-Length`` is
  refused before reading, a body without one is cut off while streaming;
* only ``image/*`` responses (``allowed_content_types``) are read.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import logging
import os
import re
import ssl
import time
from types import TracebackType
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from clmlf.fetch.net_guard import AddressPolicy, BadURL, BlockedAddress, check_host, check_url
from clmlf.fetch.pinned_transport import Deadline, GuardedBackend, GuardedTransport, Resolver, system_resolver
from contract.posts import Post

log = logging.getLogger(__name__)

REASONS = (
    "blocked_address",
    "bad_url",
    "timeout",
    "too_large",
    "bad_content_type",
    "http_error",
    "too_many_redirects",
    "connection_error",
    "bad_base64",
)

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_RETRYABLE_REASONS = frozenset({"timeout", "connection_error"})
_CHUNK_BYTES = 64 * 1024
# An attempt is only worth starting with at least this much budget left.
_MIN_ATTEMPT_SECONDS = 0.05
_DATA_URI_PREFIX = re.compile(r"^\s*data:[^,]{0,200};base64,", re.IGNORECASE)
_WHITESPACE = re.compile(rb"\s+")


class ImageFetchError(Exception):
    """An image that could not be obtained; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str, *, status: int | None = None):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.reason in _RETRYABLE_REASONS or (
            self.reason == "http_error" and self.status is not None and self.status >= 500
        )


class FetchConfig(BaseModel):
    """Limits and policy of the image fetcher (validated once; immutable)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect_timeout: float = Field(3.0, gt=0, description="seconds to resolve and connect")
    read_timeout: float = Field(5.0, gt=0, description="seconds without a byte before an attempt fails")
    total_timeout: float = Field(10.0, gt=0, description="hard budget of one fetch: redirects, retries, backoff")
    max_bytes: int = Field(DEFAULT_MAX_BYTES, gt=0, description="body size cap (also for base64 images)")
    max_redirects: int = Field(3, ge=0, le=20)
    retries: int = Field(2, ge=0, le=10, description="extra attempts on timeouts, connection errors, 5xx")
    backoff_initial: float = Field(0.2, ge=0, description="first retry backoff, seconds (doubles, jittered)")
    backoff_max: float = Field(2.0, ge=0)
    allow_private: bool = Field(False, description="turn the SSRF guard off (tests, trusted networks)")
    allow_networks: tuple[str, ...] = Field((), description="non-public networks allowed anyway (CIDR)")
    allowed_content_types: tuple[str, ...] = ("image/*",)
    user_agent: str = "clmlf-monitor/0.1 (image fetcher)"
    ca_file: str | None = Field(None, description="PEM bundle to trust instead of the default CAs")
    max_connections: int = Field(32, gt=0)
    max_keepalive_connections: int = Field(16, ge=0)

    @field_validator("allow_networks")
    @classmethod
    def _valid_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        AddressPolicy.build(allow_networks=value)  # raises ValueError on a bad CIDR
        return value

    @field_validator("ca_file")
    @classmethod
    def _readable_ca_file(cls, value: str | None) -> str | None:
        if value is not None and not os.path.isfile(value):
            raise ValueError(f"CA file {value!r} does not exist")
        return value

    def policy(self) -> AddressPolicy:
        return AddressPolicy.build(self.allow_private, self.allow_networks)


class ImageFetcher:
    """Thread-safe, pooled fetcher of image bytes (see the module docstring)."""

    def __init__(self, config: FetchConfig | None = None, *, resolver: Resolver = system_resolver):
        self.config = config or FetchConfig()
        self._policy = self.config.policy()
        self._deadline = Deadline()
        limits = httpx.Limits(
            max_connections=self.config.max_connections,
            max_keepalive_connections=self.config.max_keepalive_connections,
        )
        backend = GuardedBackend(self._policy, self._deadline, resolver=resolver)
        ssl_context = (
            ssl.create_default_context(cafile=self.config.ca_file)
            if self.config.ca_file
            else httpx.create_ssl_context()
        )
        transport = GuardedTransport(backend, limits, ssl_context)
        self._client = httpx.Client(
            transport=transport,
            follow_redirects=False,
            trust_env=False,  # an environment proxy would connect to hosts we never vetted
            headers={
                "User-Agent": self.config.user_agent,
                "Accept": "image/*",
                "Accept-Encoding": "identity",
            },
        )

    # -- public API -------------------------------------------------------------------------

    def fetch(self, url: str) -> bytes:
        """GET ``url`` and return the image bytes. Raises :class:`ImageFetchError`."""
        deadline = time.monotonic() + self.config.total_timeout
        retrying = Retrying(
            stop=stop_after_attempt(self.config.retries + 1) | _budget_spent(deadline),
            wait=wait_exponential_jitter(
                initial=self.config.backoff_initial,
                max=self.config.backoff_max,
                jitter=self.config.backoff_initial,
            ),
            retry=retry_if_exception(lambda exc: isinstance(exc, ImageFetchError) and exc.retryable),
            before_sleep=_log_retry(url),
            reraise=True,
        )
        with self._deadline.until(deadline):
            return retrying(self._fetch_once, url, deadline)

    def post_image_bytes(self, post: Post) -> bytes | None:
        """The post's image: ``image_b64`` (wins) or ``image_url``; None when it has neither."""
        if post.image_b64:
            return decode_base64_image(post.image_b64, self.config.max_bytes)
        if post.image_url:
            return self.fetch(post.image_url)
        return None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- one attempt: follow redirects, check type and size, read the body ------------------

    def _fetch_once(self, url: str, deadline: float) -> bytes:
        current = url
        for _hop in range(self.config.max_redirects + 1):
            if time.monotonic() >= deadline:
                raise ImageFetchError("timeout", f"total timeout of {self.config.total_timeout}s spent")
            self._check(current)
            response = self._send(current, deadline)
            try:
                if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
                    current = urljoin(current, response.headers["location"])
                    continue
                return self._read_image(response)
            except httpx.TimeoutException as exc:
                raise ImageFetchError("timeout", f"reading the body: {type(exc).__name__}") from None
            except httpx.TransportError as exc:
                raise ImageFetchError("connection_error", f"reading the body: {exc}") from None
            finally:
                response.close()
        raise ImageFetchError("too_many_redirects", f"more than {self.config.max_redirects} redirects")

    def _check(self, url: str) -> None:
        """Before any I/O: the URL as written, then the host as httpx will send it (IDNA-normalised)."""
        try:
            check_url(url, self._policy)
            check_host(httpx.URL(url).host, self._policy)
        except BadURL as exc:
            raise ImageFetchError("bad_url", str(exc)) from None
        except (httpx.InvalidURL, UnicodeError) as exc:  # IDNA errors are UnicodeErrors
            raise ImageFetchError("bad_url", f"{type(exc).__name__}: {exc}") from None
        except BlockedAddress as exc:
            raise ImageFetchError("blocked_address", str(exc)) from None

    def _send(self, url: str, deadline: float) -> httpx.Response:
        left = max(deadline - time.monotonic(), 0.001)
        connect = min(self.config.connect_timeout, left)
        timeout = httpx.Timeout(connect=connect, read=min(self.config.read_timeout, left), write=left, pool=connect)
        try:
            request = self._client.build_request("GET", url, timeout=timeout)
            return self._client.send(request, stream=True)
        except BlockedAddress as exc:
            raise ImageFetchError("blocked_address", str(exc)) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError) as exc:
            raise ImageFetchError("bad_url", f"{type(exc).__name__}: {exc}") from None
        except httpx.TimeoutException as exc:
            raise ImageFetchError("timeout", f"{type(exc).__name__} for host {_host_of(url)!r}") from None
        except httpx.TransportError as exc:
            raise ImageFetchError("connection_error", f"{type(exc).__name__}: {exc}") from None

    def _read_image(self, response: httpx.Response) -> bytes:
        status = response.status_code
        if status != 200:
            raise ImageFetchError("http_error", f"HTTP {status}", status=status)
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not any(fnmatch.fnmatchcase(media_type, p) for p in self.config.allowed_content_types):
            raise ImageFetchError("bad_content_type", f"content type {media_type or 'missing'!r} is not an image")
        cap = self.config.max_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > cap:
            raise ImageFetchError("too_large", f"Content-Length {int(declared)} is over the {cap}-byte cap")
        body = bytearray()
        for chunk in response.iter_raw(_CHUNK_BYTES):
            body += chunk
            if len(body) > cap:
                raise ImageFetchError("too_large", f"body is over the {cap}-byte cap")
        return bytes(body)


def decode_base64_image(text: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Strict base64 (``data:`` URI prefix and whitespace tolerated) -> bytes, at most ``max_bytes``."""
    payload = _DATA_URI_PREFIX.sub("", text, count=1)
    try:
        raw = payload.encode("ascii")
    except UnicodeEncodeError:
        raise ImageFetchError("bad_base64", "image_b64 contains non-ASCII characters") from None
    raw = _WHITESPACE.sub(b"", raw)
    if not raw:
        raise ImageFetchError("bad_base64", "image_b64 is empty")
    if len(raw) // 4 * 3 > max_bytes + 2:
        raise ImageFetchError("too_large", f"image_b64 decodes to more than {max_bytes} bytes")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageFetchError("bad_base64", f"image_b64 is not valid base64: {exc}") from None
    if len(data) > max_bytes:
        raise ImageFetchError("too_large", f"image_b64 decodes to more than {max_bytes} bytes")
    if not data:
        raise ImageFetchError("bad_base64", "image_b64 is empty")
    return data


def _budget_spent(deadline: float):
    """tenacity stop condition: no time left for the upcoming backoff plus a useful attempt."""

    def stop(state: RetryCallState) -> bool:
        return time.monotonic() + state.upcoming_sleep + _MIN_ATTEMPT_SECONDS >= deadline

    return stop


def _host_of(url: str) -> str:
    """Only the host of a URL goes to logs and messages: image URLs often carry signed tokens."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _log_retry(url: str):
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.debug(
            "image fetch retry %d for host %r after %s; sleeping %.2fs",
            state.attempt_number,
            _host_of(url),
            exc,
            state.upcoming_sleep,
        )

    return before_sleep
