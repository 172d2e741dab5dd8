"""Target vetting for forward/replay: the SSRF spellings from docs/security.md, resolved for real.

IP literals and numeric spellings go through the real ``socket.getaddrinfo`` (no network needed);
host names that do not exist here go through a fake resolver with getaddrinfo's shape.
"""

from __future__ import annotations

import socket

import pytest

from app.delivery.policy import TargetPolicy, TargetRefused, VettedTarget, vet_target

OPEN = TargetPolicy(allow_private=True)
CLOSED = TargetPolicy(allow_private=False)


def fake_resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    """A getaddrinfo stand-in: ``table`` maps a host name to the addresses it resolves to."""

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        infos = []
        for address in table[host]:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos

    return resolve


def refusal(url: str, policy: TargetPolicy, resolve=socket.getaddrinfo) -> str:
    with pytest.raises(TargetRefused) as info:
        vet_target(url, policy, resolve=resolve)
    return str(info.value)


# --- always refused, whatever allow_private says ---------------------------------------------

ALWAYS_REFUSED = [
    # (url, words the message must contain)
    ("http://169.254.169.254/latest/meta-data/", "link-local/cloud metadata"),
    ("http://2852039166/", "169.254.169.254"),  # decimal spelling of the metadata address
    ("http://0xa9fea9fe/", "169.254.169.254"),  # hex spelling
    ("http://[::ffff:169.254.169.254]/", "embeds the IPv4 address 169.254.169.254"),
    ("http://[::ffff:a9fe:a9fe]/", "embeds the IPv4 address 169.254.169.254"),
    ("http://[::169.254.169.254]/", "embeds the IPv4 address 169.254.169.254"),  # v4-compatible
    ("http://[64:ff9b::a9fe:a9fe]/", "embeds the IPv4 address 169.254.169.254"),  # NAT64
    ("http://[2002:a9fe:a9fe::1]/", "embeds the IPv4 address 169.254.169.254"),  # 6to4
    ("http://[::ffff:0:a9fe:a9fe]/", "embeds the IPv4 address 169.254.169.254"),  # SIIT
    ("http://[fd00:ec2::254]/", "cloud metadata"),  # AWS IPv6 metadata (inside ULA)
    ("http://100.100.100.200/", "cloud metadata"),  # Alibaba (inside CGNAT)
    ("http://169.254.170.2/v2/credentials", "cloud metadata"),  # AWS ECS
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://0/", "0.0.0.0"),  # "0" resolves to 0.0.0.0, which reaches this host
    ("http://0.0.0.0:8000/", "unspecified"),
    ("http://0.1.2.3/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://[::ffff:0.0.0.0]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250:1900/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    # user@host forms and parser-mismatch shapes
    ("http://user@127.0.0.1/", "user information"),
    ("http://user:secret@example.com/", "user information"),
    ("http://127.0.0.1:80\\@example.com/", "user information"),
    ("http://example.com@127.0.0.1/", "user information"),
    # schemes and malformed URLs
    ("ftp://x/", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("gopher://127.0.0.1:6379/_INFO", "only http and https"),
    ("javascript:alert(1)", "only http and https"),
    ("//example.com/", "only http and https"),
    ("http:///path", "no host"),
    ("http://:8000/", "no host"),
    ("http://0177.0.0.1/", "not a valid URL"),  # httpx refuses leading-zero IPv4 outright
    ("http://[::1/", "not a valid URL"),
]


@pytest.mark.parametrize("policy", [OPEN, CLOSED], ids=["allow_private", "public_only"])
@pytest.mark.parametrize(("url", "words"), ALWAYS_REFUSED)
def test_always_refused(url: str, words: str, policy: TargetPolicy) -> None:
    assert words in refusal(url, policy)


def test_metadata_message_says_what_and_why() -> None:
    assert refusal("http://169.254.169.254/", OPEN) == (
        "169.254.169.254 is a link-local/cloud metadata address; Hookbin never sends requests there"
    )
    message = refusal("http://2852039166/", OPEN)
    assert message.startswith("2852039166 resolves to 169.254.169.254, which is a link-local")


# --- loopback and private: only with allow_private -------------------------------------------

PRIVATE = [
    # (url, address connected to)
    ("http://127.0.0.1:3000/", "127.0.0.1"),
    ("http://2130706433/", "127.0.0.1"),  # decimal
    ("http://0x7f000001/", "127.0.0.1"),  # hex
    ("http://127.1/", "127.0.0.1"),  # short form
    ("http://127.0.0.2/", "127.0.0.2"),
    ("http://127\u30020\u30020\u30021/", "127.0.0.1"),  # ideographic full stops (IDNA maps them)
    ("http://[::1]:8080/", "::1"),
    ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),  # IPv4-mapped: connect over IPv4
    ("http://[::ffff:7f00:1]/", "127.0.0.1"),
    ("http://[::127.0.0.1]/", "::7f00:1"),  # IPv4-compatible: vetted as 127.0.0.1
    ("http://10.1.2.3/", "10.1.2.3"),
    ("http://172.16.0.1/", "172.16.0.1"),
    ("http://172.31.255.254/", "172.31.255.254"),
    ("http://192.168.1.10/", "192.168.1.10"),
    ("http://100.64.0.1/", "100.64.0.1"),  # CGNAT
    ("http://[fd12:3456::1]/", "fd12:3456::1"),  # unique local
    ("http://[64:ff9b::a00:1]/", "64:ff9b::a00:1"),  # NAT64 to 10.0.0.1
]


@pytest.mark.parametrize(("url", "address"), PRIVATE)
def test_private_allowed_with_allow_private(url: str, address: str) -> None:
    assert vet_target(url, OPEN).address == address


@pytest.mark.parametrize(("url", "address"), PRIVATE)
def test_private_refused_without_allow_private(url: str, address: str) -> None:
    message = refusal(url, CLOSED)
    assert "only sends requests to public addresses" in message


def test_localhost_really_resolves_and_is_vetted() -> None:
    # Whatever localhost resolves to here (127.0.0.1 and/or ::1), all of it is loopback.
    assert vet_target("http://localhost:3000/", OPEN).address in ("127.0.0.1", "::1")
    assert "loopback" in refusal("http://localhost:3000/", CLOSED)


def test_special_purpose_ranges_are_not_public() -> None:
    assert "special-purpose" in refusal("http://192.0.2.10/", CLOSED)  # documentation
    assert "special-purpose" in refusal("http://198.18.0.1/", CLOSED)  # benchmarking
    assert vet_target("http://192.0.2.10/", OPEN).address == "192.0.2.10"


# --- public targets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://8.8.8.8/", "8.8.8.8"),
        ("http://134744072/", "8.8.8.8"),  # decimal spelling of a public address is fine too
        ("http://[2606:4700:4700::1111]/", "2606:4700:4700::1111"),
        ("http://[::ffff:8.8.8.8]/", "8.8.8.8"),  # mapped public address: fine
        ("http://[64:ff9b::808:808]/", "64:ff9b::808:808"),  # NAT64 to 8.8.8.8
    ],
)
@pytest.mark.parametrize("policy", [OPEN, CLOSED], ids=["allow_private", "public_only"])
def test_public_addresses_allowed(url: str, address: str, policy: TargetPolicy) -> None:
    assert vet_target(url, policy).address == address


def test_vetted_target_fields() -> None:
    resolve = fake_resolver({"api.example.com": ["93.184.215.14"]})
    target = vet_target("HTTPS://API.Example.COM:8443/hooks/in?x=1#frag", CLOSED, resolve)
    assert isinstance(target, VettedTarget)
    assert target.scheme == "https"
    assert target.host == "api.example.com"
    assert target.port == 8443
    assert target.address == "93.184.215.14"
    assert target.url.raw_path == b"/hooks/in?x=1"
    assert target.refused_path_prefix is None

    plain = vet_target("http://api.example.com/", CLOSED, resolve)
    assert (plain.port, plain.url.port) == (80, None)
    v6 = vet_target("http://[::1]:9000/", OPEN)
    assert (v6.host, v6.address, v6.port) == ("::1", "::1", 9000)


def test_idna_host_is_resolved_in_ascii_form() -> None:
    calls: list[str] = []
    resolve = fake_resolver({"xn--bcher-kva.example": ["93.184.215.14"]}, calls)
    target = vet_target("http://bücher.example/", CLOSED, resolve)
    assert calls == ["xn--bcher-kva.example"]
    assert target.host == "xn--bcher-kva.example"


# --- names resolving to several addresses, resolver failures ---------------------------------


def test_one_good_and_one_metadata_address_is_refused() -> None:
    resolve = fake_resolver({"rebind.example": ["93.184.215.14", "169.254.169.254"]})
    message = refusal("http://rebind.example/", OPEN, resolve)
    assert message == (
        "rebind.example resolves to 169.254.169.254, which is a link-local/cloud metadata "
        "address; Hookbin never sends requests there"
    )


def test_one_good_and_one_private_address_is_refused_without_allow_private() -> None:
    resolve = fake_resolver({"mixed.example": ["93.184.215.14", "fd00::1"]})
    assert "fd00::1" in refusal("http://mixed.example/", CLOSED, resolve)
    assert vet_target("http://mixed.example/", OPEN, resolve).address == "93.184.215.14"


def test_mapped_metadata_from_dns_is_refused() -> None:
    resolve = fake_resolver({"sneaky.example": ["2001:4860::1", "::ffff:169.254.169.254"]})
    message = refusal("http://sneaky.example/", OPEN, resolve)
    assert "embeds the IPv4 address 169.254.169.254" in message


def test_resolves_once_and_returns_first_address() -> None:
    calls: list[str] = []
    resolve = fake_resolver({"multi.example": ["93.184.215.14", "93.184.215.15"]}, calls)
    target = vet_target("http://multi.example/", CLOSED, resolve)
    assert calls == ["multi.example"]
    assert target.address == "93.184.215.14"


def test_resolver_failure_is_a_refusal() -> None:
    message = refusal("http://nowhere.invalid/", OPEN, fake_resolver({}))
    assert message == "could not resolve nowhere.invalid: Name or service not known"


def test_resolver_with_no_addresses_is_a_refusal() -> None:
    message = refusal("http://empty.example/", OPEN, fake_resolver({"empty.example": []}))
    assert "did not resolve to any" in message


# --- the server's own capture URLs -----------------------------------------------------------

OWN = TargetPolicy(allow_private=True, forbidden_hosts=("hookbin.example.com",), own_ports=(8000,))
PUBLIC_IP = fake_resolver(
    {
        "hookbin.example.com": ["93.184.215.14"],
        "hookbin.example.com.": ["93.184.215.14"],
        "other.example.com": ["93.184.215.15"],
    }
)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/h/abc",
        "http://127.0.0.1:8000/h/abc/deeper?x=1",
        "http://localhost:8000/h/abc",
        "http://2130706433:8000/h/abc",
        "http://[::1]:8000/h/abc",
        "http://[::ffff:127.0.0.1]:8000/h/abc",
        "http://127.0.0.1:8000//h/abc",  # Werkzeug merges the slashes
        "http://127.0.0.1:8000/%68/abc",  # and decodes the escape
        "http://127.0.0.1:8000/x/../h/abc",
    ],
)
def test_own_capture_url_on_own_port_is_refused(url: str) -> None:
    assert "own capture URLs" in refusal(url, OWN)


@pytest.mark.parametrize(
    "url",
    [
        "http://hookbin.example.com/h/abc",
        "https://hookbin.example.com/h/abc",
        "HTTPS://HookBin.Example.COM:443/h/abc",
        "http://hookbin.example.com:80/h/abc",
        "http://hookbin.example.com./h/abc",
    ],
)
def test_own_capture_url_on_public_host_is_refused(url: str) -> None:
    message = refusal(url, OWN, PUBLIC_IP)
    assert "own capture URLs (/h/...)" in message
    assert "loop" in message


def test_own_host_is_refused_without_resolving() -> None:
    calls: list[str] = []
    refusal("http://hookbin.example.com/h/abc", OWN, fake_resolver({}, calls))
    assert calls == []


def test_forbidden_host_with_port() -> None:
    policy = TargetPolicy(forbidden_hosts=("Hookbin.example.com:8443", "[::1]:9000"))
    assert "own capture" in refusal("https://hookbin.example.com:8443/h/x", policy, PUBLIC_IP)
    assert "own capture" in refusal("http://[::1]:9000/h/x", policy)
    # Another port on the same name is a different server.
    target = vet_target("https://hookbin.example.com/h/x", policy, PUBLIC_IP)
    assert target.address == "93.184.215.14"


@pytest.mark.parametrize(
    ("url", "resolve", "own"),
    [
        ("http://127.0.0.1:8000/api/hook", socket.getaddrinfo, True),  # own server, other path
        ("http://127.0.0.1:8000/", socket.getaddrinfo, True),
        ("http://hookbin.example.com/", PUBLIC_IP, True),
        ("http://127.0.0.1:8001/h/abc", socket.getaddrinfo, False),  # another local port
        ("http://10.0.0.7:8000/h/abc", socket.getaddrinfo, False),  # not loopback
        ("http://other.example.com/h/abc", PUBLIC_IP, False),
    ],
)
def test_other_paths_hosts_and_ports_are_allowed(url: str, resolve, own: bool) -> None:
    target = vet_target(url, OWN, resolve)
    # The client refuses a captured sub-path that would lead into /h/ on the server itself.
    assert target.refused_path_prefix == ("/h/" if own else None)


def test_custom_capture_prefix() -> None:
    policy = TargetPolicy(capture_prefix="/capture/", own_ports=(5000,))
    assert "own capture" in refusal("http://127.0.0.1:5000/capture/x", policy)
    assert vet_target("http://127.0.0.1:5000/h/x", policy).address == "127.0.0.1"


def test_loopback_loop_without_allow_private_still_refused() -> None:
    policy = TargetPolicy(allow_private=False, own_ports=(8000,))
    assert "loopback" in refusal("http://127.0.0.1:8000/h/abc", policy)
