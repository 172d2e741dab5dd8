"""Decide whether Hookbin may send a request to a user-named URL (forward and replay targets).

Filtering URL *strings* cannot stop SSRF (see docs/security.md: decimal/hex/octal IPv4 spellings,
IPv4-mapped IPv6, ``user@host`` tricks, parser mismatches, DNS rebinding). So this module:

* parses the URL with ``httpx.URL``, the very parser the client uses, so both agree on the host;
* resolves the host exactly once and vets *every* address it resolves to;
* hands back the vetted address, and the client connects to that address instead of resolving
  again, which closes the check-then-connect (DNS rebinding) window.

Odd spellings such as ``2130706433``, ``0x7f000001``, ``127.1`` or ``0`` need no special parsing:
``getaddrinfo`` turns them into the address they really mean, and that address is what is vetted.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Same signature as socket.getaddrinfo; tests pass a fake for names that do not resolve here.
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

DEFAULT_PORTS = {"http": 80, "https": 443}

_NEVER = "Hookbin never sends requests there"
_NO_PRIVATE = "this Hookbin server only sends requests to public addresses"

_net = ipaddress.ip_network

# Metadata services that hand out cloud credentials. 169.254.169.254 (AWS, GCP, Azure, Oracle,
# DigitalOcean...) and 169.254.170.2 (AWS ECS) are link-local anyway; the others are not, and
# would otherwise slip through as "private" (fd00:ec2::254 is ULA, 100.100.100.200 is CGNAT) or
# even "public" (168.63.129.16, Azure's WireServer, is a routable Microsoft address).
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "168.63.129.16",
    )
)

# Refused whatever the policy says: nothing a webhook developer needs lives there, and several
# of them are the classic SSRF prizes.
_ALWAYS_REFUSED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (_net("169.254.0.0/16"), "a link-local address"),
    (_net("fe80::/10"), "a link-local address"),
    (_net("0.0.0.0/8"), "an unspecified ('this host') address"),
    (_net("::/128"), "the unspecified address"),
    (_net("224.0.0.0/4"), "a multicast address"),
    (_net("ff00::/8"), "a multicast address"),
    (_net("255.255.255.255/32"), "the broadcast address"),
    (_net("240.0.0.0/4"), "a reserved address (240.0.0.0/4)"),
)

# Allowed only with TargetPolicy.allow_private (a developer forwarding to localhost:3000).
_LOOPBACK = (_net("127.0.0.0/8"), _net("::1/128"))
_PRIVATE: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (_net("10.0.0.0/8"), "a private address"),
    (_net("172.16.0.0/12"), "a private address"),
    (_net("192.168.0.0/16"), "a private address"),
    (_net("100.64.0.0/10"), "a carrier-grade NAT (shared) address"),
    (_net("fc00::/7"), "a unique-local (private) address"),
    # Python 3.11 calls these "global", but they only ever name networks inside a site.
    (_net("fec0::/10"), "a site-local (private) address"),
    (_net("64:ff9b:1::/48"), "a local-use NAT64 address"),
)

# IPv6 forms that carry an IPv4 address in their last 32 bits and reach it over IPv4 (or through
# a translator). Python 3.11 calls most of them global, e.g. ``::127.0.0.1`` and
# ``64:ff9b::a9fe:a9fe`` (= 169.254.169.254 through NAT64), so the embedded address is vetted.
_EMBEDS_LOW32 = (
    _net("::ffff:0:0:0/96"),  # IPv4-translated (SIIT)
    _net("64:ff9b::/96"),  # well-known NAT64 prefix
    _net("::/96"),  # IPv4-compatible (deprecated); :: and ::1 are handled before this
)


class TargetRefused(Exception):
    """The URL may not be used as a forward/replay target; ``str(exc)`` says what and why."""


@dataclass(frozen=True)
class TargetPolicy:
    """What this server allows outbound requests to reach."""

    # Loopback and private networks (localhost:3000 during development). Turn off on a public
    # deployment, where "private" means the server's own infrastructure.
    allow_private: bool = True
    # ``host[:port]`` of the server's own public names: refuse its capture URLs (request loops).
    forbidden_hosts: tuple[str, ...] = ()
    # Path prefix of capture URLs.
    capture_prefix: str = "/h/"
    # Ports this server listens on locally: loopback:port + capture path is a loop too.
    own_ports: tuple[int, ...] = ()


def policy_for(settings: Settings, request_host: str | None = None) -> TargetPolicy:
    """The replay/forward policy of this server, refusing its own capture URLs.

    ``request_host`` is the ``Host`` a page or API call came in on: another name of this server.
    """
    hosts = []
    if settings.public_url:
        hosts.append(urlsplit(settings.public_url).netloc)
    if request_host:
        hosts.append(request_host)
    return TargetPolicy(
        allow_private=settings.private_targets_allowed,
        forbidden_hosts=tuple(hosts),
        own_ports=(settings.listen_port,),
    )


@dataclass(frozen=True)
class VettedTarget:
    """A target URL that passed the policy, pinned to the address the client must connect to."""

    url: httpx.URL  # the URL as the user wrote it, normalised by httpx
    host: str  # host as in the URL (IDNA/ASCII form, IPv6 without brackets); Host header and SNI
    port: int  # explicit port or the scheme's default
    address: str  # the vetted IP address to connect to; never resolve ``host`` again
    scheme: str  # "http" or "https"
    # Set when the target is this Hookbin server itself (its capture path is refused, but the user
    # could still reach it by appending a captured sub-path): the client refuses any final path
    # under this prefix.
    refused_path_prefix: str | None = None


def is_capture_path(path: str, prefix: str) -> bool:
    """True when the decoded URL ``path`` falls under the capture ``prefix``.

    Repeated slashes are collapsed first because Werkzeug merges them when routing.
    """
    return bool(prefix) and re.sub(r"/{2,}", "/", path).startswith(prefix)


def vet_target(
    url: str, policy: TargetPolicy, resolve: Resolver = socket.getaddrinfo
) -> VettedTarget:
    """Check ``url`` against ``policy`` and return where to connect, or raise TargetRefused.

    ``resolve`` is called once, like ``socket.getaddrinfo(host, port, 0, SOCK_STREAM)``; every
    address it returns must pass, since the client (or an attacker's DNS) could pick any of them.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        # e.g. "http://0177.0.0.1/": httpx refuses leading-zero IPv4 outright.
        raise TargetRefused(f"{url!r} is not a valid URL: {exc}") from None

    scheme = parsed.scheme
    if scheme not in DEFAULT_PORTS:
        shown = f"{scheme!r}" if scheme else "a missing scheme"
        raise TargetRefused(f"{url!r} uses {shown}; only http and https targets are allowed")
    if parsed.userinfo:
        # "http://127.0.0.1:80\@example.com/" and friends: parsers disagree about which part
        # is the host, so credentials in a target URL are refused outright.
        raise TargetRefused(
            f"{url!r} contains user information (user@host); put credentials in a header instead"
        )
    try:
        host = parsed.raw_host.decode("ascii")
    except UnicodeDecodeError:  # pragma: no cover - httpx already IDNA-encodes hosts
        raise TargetRefused(f"{url!r} has a host that is not ASCII after IDNA encoding") from None
    if not host:
        raise TargetRefused(f"{url!r} has no host")
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[scheme]

    capture = is_capture_path(parsed.path, policy.capture_prefix)
    named_own = _is_forbidden_host(host, port, policy.forbidden_hosts)
    if capture and named_own:
        raise _loop_refusal(parsed, policy)

    addresses = _resolve(host, port, resolve)
    for ip in addresses:
        why = _refusal(ip, policy.allow_private)
        if why is not None:
            if _same_address(host, ip):
                raise TargetRefused(f"{host} {why}")
            raise TargetRefused(f"{host} resolves to {ip}, which {why}")

    on_own_port = port in policy.own_ports and any(_is_local(ip) for ip in addresses)
    if capture and on_own_port:
        raise _loop_refusal(parsed, policy)

    chosen = addresses[0]
    if isinstance(chosen, ipaddress.IPv6Address) and chosen.ipv4_mapped is not None:
        # ::ffff:a.b.c.d *is* a.b.c.d; connecting over IPv4 also works where IPv6 is disabled.
        chosen = chosen.ipv4_mapped
    return VettedTarget(
        url=parsed,
        host=host,
        port=port,
        address=str(chosen),
        scheme=scheme,
        refused_path_prefix=policy.capture_prefix if (named_own or on_own_port) else None,
    )


def _loop_refusal(url: httpx.URL, policy: TargetPolicy) -> TargetRefused:
    return TargetRefused(
        f"{url} is one of this Hookbin server's own capture URLs ({policy.capture_prefix}...); "
        "sending there would capture the request again and could loop forever"
    )


def _resolve(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        infos = resolve(host, port, 0, socket.SOCK_STREAM)
    except OSError as exc:  # socket.gaierror included
        raise TargetRefused(f"could not resolve {host}: {exc.strerror or exc}") from None
    except UnicodeError as exc:
        raise TargetRefused(f"could not resolve {host}: {exc}") from None

    addresses: list[IPAddress] = []
    for family, *_rest, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # Scoped IPv6 ("fe80::1%eth0"): the scope does not change what the address is.
        text = str(sockaddr[0]).split("%", 1)[0]
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise TargetRefused(
                f"{host} resolved to {text!r}, which is not an IP address"
            ) from None
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise TargetRefused(f"{host} did not resolve to any IPv4 or IPv6 address")
    return addresses


def _same_address(host: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(host) == ip
    except ValueError:
        return False


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches in the end, if it is one of the wrapping forms."""
    if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d
        return ip.ipv4_mapped
    if ip.sixtofour is not None:  # 2002:AABB:CCDD::/48
        return ip.sixtofour
    if int(ip) > 1 and any(ip in net for net in _EMBEDS_LOW32):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _refusal(ip: IPAddress, allow_private: bool) -> str | None:
    """Why Hookbin must not connect to ``ip`` (a phrase that follows the address), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            # The wrapper prefixes themselves are harmless; what matters is where they lead.
            why = _refusal(inner, allow_private)
            return None if why is None else f"embeds the IPv4 address {inner}, which {why}"

    if ip in _METADATA:
        if ip in _net("169.254.0.0/16"):
            return f"is a link-local/cloud metadata address; {_NEVER}"
        return f"is a cloud metadata address; {_NEVER}"
    for net, what in _ALWAYS_REFUSED:
        if ip in net:
            return f"is {what}; {_NEVER}"
    if ip.is_multicast:  # any multicast range the table above does not spell out
        return f"is a multicast address; {_NEVER}"

    if allow_private:
        return None
    if any(ip in net for net in _LOOPBACK):
        return f"is a loopback address; {_NO_PRIVATE}"
    for net, what in _PRIVATE:
        if ip in net:
            return f"is {what}; {_NO_PRIVATE}"
    if not ip.is_global:
        # Documentation, benchmarking, IETF protocol ranges and the like.
        return f"is a special-purpose (non-public) address; {_NO_PRIVATE}"
    return None


def _is_local(ip: IPAddress) -> bool:
    """Loopback or unspecified (both reach this machine), looking through IPv6 wrappers."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            ip = inner
    return ip.is_loopback or ip.is_unspecified or ip in _net("0.0.0.0/8")


def _host_key(host: str) -> str:
    # "Example.COM." and "example.com" are the same name to DNS.
    return host.lower().rstrip(".")


def _is_forbidden_host(host: str, port: int, forbidden: tuple[str, ...]) -> bool:
    """Does ``host:port`` match a ``host[:port]`` entry (ignoring case and default ports)?"""
    key = _host_key(host)
    for entry in forbidden:
        entry = entry.strip()
        if not entry:
            continue
        try:
            # Parse entries with httpx too, so "[::1]:8000" and IDNA names compare like targets.
            parsed = httpx.URL(f"http://{entry}")
            entry_host = parsed.raw_host.decode("ascii")
            entry_port = parsed.port
        except (httpx.InvalidURL, UnicodeDecodeError, ValueError):
            entry_host, entry_port = entry, None
        # httpx drops ":80" from an http URL, so an entry without a port (or with :80 / :443)
        # names the server's public host on either default port.
        ports = {entry_port} if entry_port not in (None, 80, 443) else {80, 443}
        if _host_key(entry_host) == key and port in ports:
            return True
    return False
