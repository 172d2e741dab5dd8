"""Send a captured request on to a vetted target (forward and replay) and read the answer safely.

The exchange is deliberately literal: the captured method, headers (minus the ones that describe
the original connection) and body bytes go out unchanged, and the answer comes back raw (never
decompressed) and capped. Problems on the network are reported in the result, never raised,
because a forward that fails is an ordinary outcome to show the user.
"""

from __future__ import annotations

import re
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field

import httpx

from app.delivery.policy import VettedTarget, is_capture_path

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

# Not hop-by-hop, but describe the original message: the client rebuilds them for the new one.
# Replaying Transfer-Encoding next to our Content-Length would produce a request-smuggling shape.
_REBUILT = frozenset({"host", "content-length", "transfer-encoding"})

# RFC 9110 5.6.2: token = 1*tchar. A header name outside this (e.g. with a space) made a server
# drop every header after it, and h11 refuses it anyway.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Characters left as they are when the captured path/query is put into the new URL: everything
# RFC 3986 allows there, plus "%" so that existing escapes (%2F, %20...) survive untouched.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


@dataclass
class OutboundResult:
    """What happened when Hookbin sent the request; ``status`` is None when no answer arrived."""

    status: int | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""  # raw bytes as received (still compressed), at most max_response_bytes
    body_size: int = 0  # bytes actually read and kept, up to the cap
    truncated: bool = False  # the answer was longer than max_response_bytes
    elapsed_ms: float = 0.0
    error: str | None = None
    http_version: str | None = None


def replay_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the captured headers that may be replayed, in order, with repeats and name case.

    Dropped: hop-by-hop headers (including names the captured ``Connection`` header lists),
    ``Host``, ``Content-Length``, ``Transfer-Encoding`` (the client rebuilds those), names that
    are not RFC 9110 tokens, and values containing CR, LF or NUL (which cannot be sent safely).
    Surrounding spaces/tabs are trimmed from values: they are not part of a field value.
    """
    listed: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            listed.update(part.strip().lower() for part in value.split(","))

    kept: list[tuple[str, str]] = []
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            continue
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in _REBUILT or lower in listed:
            continue
        value = value.strip(" \t")
        if any(c in value for c in "\r\n\0"):
            continue
        kept.append((name, value))
    return kept


def send(
    method: str,
    target: VettedTarget,
    path_and_query_suffix: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    timeout: float,
    max_response_bytes: int,
    verify_tls: bool = True,
) -> OutboundResult:
    """Send one request to ``target`` and return the (capped, raw) answer or an error.

    ``path_and_query_suffix`` is the captured sub-path and raw query (``"/a/b?x=1"``) in wire
    form, i.e. percent-encoded; as in WSGI, characters up to U+00FF stand for the raw bytes.
    It is appended to the target URL's path and query. The connection goes to
    ``target.address`` (no second DNS lookup), with the target's own name in ``Host`` and, for
    https, in SNI and certificate checks. Redirects are returned, not followed. ``timeout``
    bounds each network step, and the whole exchange once the body is streaming.
    """
    if not _TOKEN.fullmatch(method):
        return OutboundResult(status=None, error=f"{method!r} is not a valid HTTP method name")
    try:
        url = final_url(target.url, path_and_query_suffix)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        return OutboundResult(status=None, error=f"could not build the target URL: {exc}")
    if target.refused_path_prefix and is_capture_path(url.path, target.refused_path_prefix):
        return OutboundResult(
            status=None,
            error=(
                f"{url} is one of this Hookbin server's own capture URLs; sending there would "
                "capture the request again and could loop forever"
            ),
        )

    # Same path and query, but aimed at the vetted address: httpx brackets IPv6 itself.
    connect_url = url.copy_with(host=target.address, port=target.port)
    wire_headers = _wire_headers(target, headers, body)
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}

    result = OutboundResult(status=None)
    where = _where(target)
    chunks: list[bytes] = []
    # trust_env=False: a proxy from HTTP(S)_PROXY would connect to the name, not the vetted
    # address, and .netrc could add credentials. One client per send: no shared state.
    client = httpx.Client(
        verify=verify_tls,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout),
    )
    # Timing starts after the client exists: loading the CA bundle takes tens of milliseconds
    # that have nothing to do with the target.
    start = time.perf_counter()
    deadline = start + timeout
    try:
        with client:
            request = client.build_request(method, connect_url, content=body, extensions=extensions)
            # Replace httpx's own header set (Host naming the address, and the client defaults
            # Accept, Accept-Encoding, Connection, User-Agent) with exactly what we mean to
            # send: a replay must not invent headers the caller did not capture.
            request.headers = httpx.Headers(wire_headers)
            response = client.send(request, stream=True, follow_redirects=False)
            try:
                result.status = response.status_code
                result.http_version = response.http_version
                result.headers = [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in response.headers.raw
                ]
                # iter_raw: the bytes as sent, no decompression (a small gzip answer can
                # inflate to gigabytes), stopping as soon as the cap is passed.
                for chunk in response.iter_raw():
                    room = max_response_bytes - result.body_size
                    if len(chunk) > room:
                        chunks.append(chunk[:room])
                        result.body_size += room
                        result.truncated = True
                        break
                    chunks.append(chunk)
                    result.body_size += len(chunk)
                    if time.perf_counter() > deadline:
                        # A server trickling bytes never trips the per-read timeout.
                        result.error = (
                            f"timed out after {float(timeout)} s while reading the answer "
                            f"from {where}; the body is incomplete"
                        )
                        break
            finally:
                # Closing before the end drops the connection instead of draining the rest.
                response.close()
    except httpx.HTTPError as exc:
        result.error = _describe(exc, target, timeout, got_status=result.status is not None)
    except (httpx.InvalidURL, OSError) as exc:
        result.error = f"request to {where} failed: {exc}"
    result.elapsed_ms = (time.perf_counter() - start) * 1000.0
    result.body = b"".join(chunks)
    return result


def final_url(base: httpx.URL, path_and_query_suffix: str) -> httpx.URL:
    """``base`` with the captured sub-path appended to its path and the raw query to its query.

    Exactly one slash joins the two paths, and a sub-path of ``""`` or ``"/"`` adds nothing;
    the queries are joined with ``&``. The fragment is dropped (it is never sent anyway). Dot
    segments of the sub-path are resolved inside it (``contained``), so a captured
    ``/../../admin`` never reaches above the target's own path.
    """
    sub_path, _, sub_query = path_and_query_suffix.partition("?")
    base_path, _, base_query = base.raw_path.decode("ascii").partition("?")

    rest = contained(sub_path.lstrip("/"))
    path = base_path.rstrip("/") + "/" + _quote(rest, _PATH_SAFE) if rest else base_path
    query = "&".join(q for q in (base_query, _quote(sub_query, _QUERY_SAFE)) if q)
    raw = path + ("?" + query if query else "")
    return base.copy_with(raw_path=raw.encode("ascii"), fragment=None)


def contained(sub_path: str) -> str:
    """``sub_path`` with its dot segments resolved within it: it cannot climb above its start.

    Ordinary segments keep their captured bytes. A segment that is, or decodes to, ``.`` or
    ``..`` (``%2e%2e``), or hides them behind an escaped slash or backslash (``..%2f..``), is
    split and resolved as a target server that decodes it would, and what is left is re-escaped.
    """
    out: list[str] = []
    for segment in sub_path.split("/"):
        decoded = urllib.parse.unquote(segment, encoding="latin-1")
        parts = re.split(r"[/\\]", decoded)
        if not any(part in (".", "..") for part in parts):
            out.append(segment)
            continue
        for part in parts:
            if part in ("", "."):
                continue
            if part == "..":
                if out:
                    out.pop()
                continue
            out.append(_quote(part, ""))
    return "/".join(out)


def _quote(text: str, safe: str) -> str:
    # WSGI hands the raw request line over as latin-1 text, so such a string maps back to the
    # exact wire bytes; anything beyond latin-1 can only be real text, sent as UTF-8.
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raw = text.encode("utf-8")
    # Escapes everything else: "#" (would start a fragment), spaces, controls, non-ASCII.
    return urllib.parse.quote(raw, safe=safe)


def _encode(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _wire_headers(
    target: VettedTarget, captured: list[tuple[str, str]], body: bytes
) -> list[tuple[bytes, bytes]]:
    """Host first (the target's real name), the replayable captured headers, then framing."""
    wire = [(b"Host", target.url.netloc)]  # host[:port] as in the URL, IPv6 bracketed
    wire += [(_encode(name), _encode(value)) for name, value in replay_headers(captured)]
    framed = any(name.lower() in ("content-length", "transfer-encoding") for name, _ in captured)
    if body or framed:
        # Content-Length: 0 too when the original carried a (now empty) body, so that servers
        # expecting a body on POST/PUT do not answer 411 Length Required.
        wire.append((b"Content-Length", str(len(body)).encode("ascii")))
    return wire


def _where(target: VettedTarget) -> str:
    """``host:port`` for messages, plus the address when the host was a name."""
    address = f"[{target.address}]" if ":" in target.address else target.address
    if target.host == target.address:
        return f"{address}:{target.port}"
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port} ({target.address})"


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return seen


def _describe(exc: httpx.HTTPError, target: VettedTarget, timeout: float, got_status: bool) -> str:
    """A sentence for the UI saying what went wrong on the network."""
    where = _where(target)
    if isinstance(exc, httpx.ConnectTimeout):
        return f"timed out after {float(timeout)} s connecting to {where}"
    if isinstance(exc, httpx.TimeoutException):
        step = "reading the answer from" if got_status else "waiting for an answer from"
        return f"timed out after {float(timeout)} s {step} {where}"
    root = _root_cause(exc)
    if isinstance(exc, httpx.ConnectError):
        if isinstance(root, ConnectionRefusedError):
            return f"connection refused by {where}"
        if isinstance(root, ssl.SSLCertVerificationError):
            return f"TLS certificate of {target.host} could not be verified: {root.verify_message}"
        if isinstance(root, ssl.SSLError):
            return f"TLS handshake with {where} failed: {root.reason or root}"
        if isinstance(root, OSError) and root.strerror:
            return f"could not connect to {where}: {root.strerror}"
        return f"could not connect to {where}: {exc}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"{where} did not answer with valid HTTP: {exc}"
    if isinstance(exc, httpx.LocalProtocolError):
        return f"the request could not be sent as valid HTTP/1.1: {exc}"
    return f"request to {where} failed: {exc or type(exc).__name__}"
