"""SSRF guard: which URLs and IP addresses the image fetcher may reach.

Two layers, both driven by one :class:`AddressPolicy`:

1. :func:`check_url` runs before any network I/O. It accepts only ``http`` and
   ``https`` URLs without userinfo, backslashes or control characters, and refuses
   hosts that are IP literals in *any* spelling the C resolver accepts (decimal
   ``2130706433``, hex ``0x7f000001`` / ``0x7f.0.0.1``, octal ``0177.0.0.1``, short
   ``127.1``, IPv6 ``[::1]``, ``[::ffff:127.0.0.1]``...) or ``localhost`` names,
   when the address is not allowed.
2. The connection layer (:mod:`clmlf.fetch.pinned_transport`) resolves every other host
   once, refuses the connection if ANY resolved address is not allowed, and dials
   the vetted address itself, so a second DNS answer (rebinding) is never used.

Non-public means: loopback, RFC 1918 private, link-local, multicast, reserved,
unspecified, shared address space (100.64.0.0/10), documentation and benchmark
ranges, IPv6 unique-local and site-local, and IPv6 addresses that embed such an
IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated, 6to4, Teredo, NAT64).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", includes 0.0.0.0
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata endpoints
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes 255.255.255.255
    )
)

_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (includes Teredo 2001::/32)
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCALHOST_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class BlockedAddress(Exception):
    """The URL's host is, or resolves to, an address the policy refuses."""

    def __init__(self, host: str, address: str):
        super().__init__(f"host {host!r} is or resolves to a non-public address ({address})")
        self.host = host
        self.address = address


class BadURL(ValueError):
    """The URL is not an acceptable http(s) URL."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, translated, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _TRANSLATED or ip in _NAT64 or ip in _COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses (see the module docstring)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        inner = embedded_ipv4(ip)
        if inner is not None and not is_public_address(inner):
            return False
        if ip in _MAPPED or ip in _COMPATIBLE:
            return inner is not None and is_public_address(inner)
        if any(ip in net for net in _BLOCKED_V6) or ip.is_site_local:
            return False
    elif any(ip in net for net in _BLOCKED_V4):
        return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


@dataclass(frozen=True)
class AddressPolicy:
    """Which IP addresses may be contacted.

    ``allow_private`` turns the guard off (tests, trusted networks).
    ``allow_networks`` lists extra networks that are allowed although not
    public (an internal CDN; in tests e.g. ``127.0.0.2/32`` while ``127.0.0.1``
    stays refused).
    """

    allow_private: bool = False
    allow_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def build(cls, allow_private: bool = False, allow_networks: Iterable[str] = ()) -> AddressPolicy:
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in allow_networks)
        return cls(allow_private=allow_private, allow_networks=nets)

    def is_allowed(self, ip: IPAddress) -> bool:
        if self.allow_private:
            return True
        if any(ip.version == net.version and ip in net for net in self.allow_networks):
            return True
        return is_public_address(ip)


def parse_ip_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one in any form inet_aton/inet_pton accept, else None.

    Handles ``127.0.0.1``, ``2130706433``, ``0x7f000001``, ``0x7f.0.0.1``,
    ``0177.0.0.1``, ``127.1``, ``10.1``, ``::1``, ``::ffff:7f00:1``, bracketed
    IPv6 and one trailing dot.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    if ":" in text:
        text = text.replace("%25", "%")
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _parse_ipv4_loose(text)


def _parse_ipv4_loose(text: str) -> ipaddress.IPv4Address | None:
    """BSD inet_aton: 1-4 parts of decimal, 0x-hex or 0-octal; the last part fills the remaining bytes."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        value = _parse_inet_number(part)
        if value is None:
            return None
        values.append(value)
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _parse_inet_number(part: str) -> int | None:
    if not part:
        return None
    lowered = part.lower()
    try:
        if lowered.startswith("0x"):
            digits = lowered[2:]
            return int(digits, 16) if digits else 0
        if len(lowered) > 1 and lowered.startswith("0"):
            return int(lowered, 8)
        if lowered.isdigit():
            return int(lowered, 10)
    except ValueError:
        return None
    return None


def is_localhost_name(host: str) -> bool:
    name = host.strip().rstrip(".").lower()
    return name in _LOCALHOST_NAMES or name.endswith(".localhost")


def check_url(url: str, policy: AddressPolicy) -> SplitResult:
    """Validate ``url`` before any I/O. Raises :class:`BadURL` or :class:`BlockedAddress`."""
    if not isinstance(url, str) or not url:
        raise BadURL("empty URL")
    if any(ch in url for ch in "\\\t\r\n ") or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise BadURL("URL contains whitespace, a backslash or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadURL(f"unparseable URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadURL(f"scheme {parts.scheme!r} is not http or https")
    if "@" in parts.netloc:
        raise BadURL("URL must not contain userinfo (user@host)")
    host = parts.hostname or ""
    if not host:
        raise BadURL("URL has no host")
    if port == 0:
        raise BadURL("port 0 is not allowed")
    check_host(host, policy)
    return parts


def check_host(host: str, policy: AddressPolicy) -> None:
    """Refuse a localhost name or a refused IP literal (any spelling). Names are checked at connect time."""
    if policy.allow_private:
        return
    if is_localhost_name(host):
        raise BlockedAddress(host, "localhost")
    literal = parse_ip_literal(host)
    if literal is not None and not policy.is_allowed(literal):
        raise BlockedAddress(host, str(literal))
