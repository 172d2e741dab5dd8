"""Edited and re-signed replays: check what the user changed and build the request that goes out.

A plain replay sends the captured request as it is (``replay``). Here the user may change the
method, sub-path, query, headers and body first, and may ask for the request to be signed afresh
with the bin's current secret, so that a receiver checking signatures accepts it again (a stale
timestamp, or a body that no longer matches the captured signature, would fail otherwise).

Everything a user types is checked and refused with a sentence (``EditError``, shown as a 400):
nothing half-valid is sent. What comes out is an ``Outgoing`` request: exactly what the client
sends and what the attempt stores.

Choices worth knowing:

* Headers the HTTP client writes itself (``Host``, ``Content-Length``, ``Transfer-Encoding``) and
  hop-by-hop headers are dropped from an edit just as from a plain replay, so that the stored list
  is what was really sent; the edit form does not show them in the first place.
* A body that cannot survive a round trip through a browser textarea (not UTF-8, control
  characters, mixed line endings) is binary: it is kept as captured, or replaced by base64 the
  user edits. Textareas send CRLF line endings, so a text body gets back the line endings it was
  captured with.
* An "edit" that changes nothing is a plain replay: nothing extra is stored.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from app.config import Settings
from app.delivery.client import final_url, replay_headers
from app.delivery.policy import TargetRefused
from app.signing.common import PROVIDERS
from app.signing.recheck import with_verdicts
from app.signing.sign import sign
from app.storage.repository import Storage

__all__ = [
    "EDIT_FIELDS",
    "EditError",
    "EditableBody",
    "Outgoing",
    "ReplayEdit",
    "build_outgoing",
    "edit_from_form",
    "edit_from_json",
    "editable_body",
    "header_lines",
    "outgoing_from_api",
    "parse_header_lines",
    "resign_headers",
    "resign_plan",
]

#: Keys of the replay API body that ask for an edited or re-signed request.
EDIT_FIELDS = ("method", "path", "query", "headers", "body", "body_base64", "resign")

#: Bodies up to this size are offered for editing in the page. The form is posted as
#: multipart/form-data (no percent-encoding), and must stay under the UI's 1 MiB request cap
#: even when every LF comes back as CRLF or the bytes travel as base64.
MAX_EDITABLE_TEXT = 256 * 1024
MAX_EDITABLE_BINARY = 192 * 1024

MAX_METHOD = 64  # the attempts.method column
MAX_TARGET_PART = 8192  # path or query
MAX_HEADERS = 200
MAX_HEADER_BYTES = 64 * 1024

# RFC 9110 5.6.2 token, for method and header names.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters a header value may not carry (tab is allowed inside a value).
_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Path and query go on the request line as typed (escapes kept), so no spaces or controls.
_TARGET_BAD = re.compile(r"[\x00-\x20\x7f]")
# A body the textarea would alter: C0 controls other than tab/LF/CR, DEL, C1 controls.
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Lone surrogates (JSON allows "\ud800") cannot be encoded: refused in every text field.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Methods that carry a body: they always get a Content-Length, 0 included, or some servers
# answer 411 Length Required.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class EditError(ValueError):
    """An edited replay that cannot be sent; ``str(exc)`` tells the user what to fix."""


@dataclass(frozen=True)
class ReplayEdit:
    """What the user asked to change; ``None`` means "as captured"."""

    method: str | None = None
    path: str | None = None
    query: str | None = None
    headers: list[tuple[str, str]] | None = None
    body: bytes | None = None
    resign: bool = False


@dataclass(frozen=True)
class Outgoing:
    """The request a replay sends when it differs from the captured one.

    ``suffix`` is the sub-path plus query appended to the target URL (as ``replay.suffix_of``
    gives for a captured request); ``headers`` are the headers sent, without the ones the client
    writes itself (Host, Content-Length).
    """

    method: str
    suffix: str
    headers: list[tuple[str, str]]
    body: bytes
    framed: bool  # send a Content-Length even for an empty body
    edited: bool
    resigned: str | None

    def send_headers(self) -> list[tuple[str, str]]:
        """The header list to hand to ``app.delivery.client.send``."""
        if self.framed:
            # The client drops a Content-Length it is given and writes the real one; its
            # presence is what makes it frame an empty body.
            return [*self.headers, ("Content-Length", str(len(self.body)))]
        return list(self.headers)

    def attempt_fields(self) -> dict[str, Any]:
        """The attempts columns that record what was sent."""
        return {
            "request_suffix": self.suffix,
            "request_headers": [list(h) for h in self.headers],
            "request_body": self.body,
            "edited": self.edited,
            "resigned": self.resigned,
        }


# --- parsing what the user sent --------------------------------------------------------------


def _no_surrogates(text: str, what: str) -> None:
    if _SURROGATE.search(text):
        raise EditError(f"{what} contains unpaired surrogates (\\ud800-\\udfff)")


def _check_method(value: Any) -> str:
    if not isinstance(value, str):
        raise EditError("method must be a string")
    method = value.strip()
    if not method:
        raise EditError("method must not be empty")
    if len(method) > MAX_METHOD:
        raise EditError(f"method is longer than {MAX_METHOD} characters")
    if not _TOKEN.fullmatch(method):
        raise EditError(
            f"method {method[:40]!r} is not a valid HTTP method name "
            "(letters, digits and !#$%&'*+-.^_`|~ only, no spaces)"
        )
    return method


def _check_path(value: Any) -> str:
    if not isinstance(value, str):
        raise EditError("path must be a string")
    path = value.strip(" \t") or "/"
    if not path.startswith("/"):
        raise EditError("path must start with /")
    if len(path) > MAX_TARGET_PART:
        raise EditError(f"path is longer than {MAX_TARGET_PART} characters")
    if "?" in path or "#" in path:
        raise EditError("path may not contain ? or # (put the query in the query field)")
    if _TARGET_BAD.search(path):
        raise EditError("path may not contain spaces or control characters; percent-encode them")
    _no_surrogates(path, "path")
    return path


def _check_query(value: Any) -> str:
    if not isinstance(value, str):
        raise EditError("query must be a string")
    query = value.strip(" \t")
    query = query[1:] if query.startswith("?") else query
    if len(query) > MAX_TARGET_PART:
        raise EditError(f"query is longer than {MAX_TARGET_PART} characters")
    if "#" in query:
        raise EditError("query may not contain # (a fragment is never sent)")
    if _TARGET_BAD.search(query):
        raise EditError("query may not contain spaces or control characters; percent-encode them")
    _no_surrogates(query, "query")
    return query


def _check_header(name: Any, value: Any, where: str) -> tuple[str, str]:
    if not isinstance(name, str) or not isinstance(value, str):
        raise EditError(f"{where}: header name and value must be strings")
    if not _TOKEN.fullmatch(name):
        raise EditError(
            f"{where}: {name[:60]!r} is not a valid header name "
            "(letters, digits and !#$%&'*+-.^_`|~ only, no spaces or colons)"
        )
    value = value.strip(" \t")
    if "\r" in value or "\n" in value:
        raise EditError(f"{where}: the value of {name} contains a line break (CR or LF)")
    if _VALUE_CONTROL.search(value):
        raise EditError(f"{where}: the value of {name} contains a control character")
    _no_surrogates(value, f"{where}: the value of {name}")
    return name, value


def _check_headers(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if len(pairs) > MAX_HEADERS:
        raise EditError(f"at most {MAX_HEADERS} headers")
    if sum(len(n) + len(v) for n, v in pairs) > MAX_HEADER_BYTES:
        raise EditError(f"headers are larger than {MAX_HEADER_BYTES // 1024} KiB in total")
    # Host, Content-Length, Transfer-Encoding and hop-by-hop headers go, as in a plain replay.
    return replay_headers(pairs)


def parse_header_lines(text: str) -> list[tuple[str, str]]:
    """Headers typed as one ``Name: value`` per line; order and repeats are kept.

    Blank lines are skipped. Raises ``EditError`` naming the line for anything else malformed.
    """
    pairs: list[tuple[str, str]] = []
    # split("\n"), not splitlines(): a value may legitimately hold U+2028 and friends, which
    # splitlines() would treat as line breaks.
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip():
            continue
        if line[0] in " \t":
            raise EditError(
                f"headers line {number}: starts with a space (folded header lines are not "
                "supported; put the whole value on one line)"
            )
        name, colon, value = line.partition(":")
        if not colon:
            raise EditError(f"headers line {number}: expected 'Name: value'")
        pairs.append(_check_header(name, value, f"headers line {number}"))
    return _check_headers(pairs)


def header_lines(headers: list[tuple[str, str]]) -> str:
    """Headers as the edit form shows them: one ``Name: value`` per line."""
    return "\n".join(f"{name}: {value}" for name, value in headers)


def _decode_base64(text: str, what: str) -> bytes:
    compact = re.sub(r"\s+", "", text)  # pasted base64 is often wrapped
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise EditError(f"{what} is not valid base64") from None


def edit_from_json(data: Mapping[str, Any]) -> ReplayEdit:
    """The edit asked for in a ``POST /api/requests/{id}/replay`` body; null means "as captured"."""
    method = path = query = None
    headers = None
    body = None
    if data.get("method") is not None:
        method = _check_method(data["method"])
    if data.get("path") is not None:
        path = _check_path(data["path"])
    if data.get("query") is not None:
        query = _check_query(data["query"])
    if data.get("headers") is not None:
        given = data["headers"]
        if not isinstance(given, list) or not all(
            isinstance(h, list | tuple) and len(h) == 2 for h in given
        ):
            raise EditError("headers must be a list of [name, value] pairs")
        headers = _check_headers(
            [_check_header(n, v, f"headers[{i}]") for i, (n, v) in enumerate(given)]
        )
    if data.get("body") is not None and data.get("body_base64") is not None:
        raise EditError("give body or body_base64, not both")
    if data.get("body") is not None:
        if not isinstance(data["body"], str):
            raise EditError("body must be a string (use body_base64 for bytes)")
        try:
            body = data["body"].encode("utf-8")
        except UnicodeEncodeError:
            raise EditError("body contains unpaired surrogates (\\ud800-\\udfff)") from None
    elif data.get("body_base64") is not None:
        if not isinstance(data["body_base64"], str):
            raise EditError("body_base64 must be a string")
        body = _decode_base64(data["body_base64"], "body_base64")
    resign = data.get("resign", False)
    if resign is None:
        resign = False
    if not isinstance(resign, bool):
        raise EditError("resign must be true or false")
    return ReplayEdit(method, path, query, headers, body, resign)


@dataclass(frozen=True)
class EditableBody:
    """How the edit form offers a captured body.

    ``mode``: ``"text"`` (a textarea with ``text``), ``"binary"`` (keep, or edit ``base64``) or
    ``"large"`` (kept as captured; too big to edit in the page).
    """

    mode: str
    size: int
    text: str = ""
    base64: str = ""
    crlf: bool = False


def editable_body(body: bytes) -> EditableBody:
    """Decide whether ``body`` can be edited as text in the page without being altered."""
    size = len(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not _BODY_CONTROL.search(text):
        crlf = "\r\n" in text
        bare_cr = text.count("\r") != text.count("\r\n")
        mixed = crlf and text.count("\n") != text.count("\r\n")
        if not bare_cr and not mixed:
            if size > MAX_EDITABLE_TEXT:
                return EditableBody("large", size)
            return EditableBody("text", size, text=text.replace("\r\n", "\n"), crlf=crlf)
    if size > MAX_EDITABLE_BINARY:
        return EditableBody("large", size)
    return EditableBody("binary", size, base64=base64.b64encode(body).decode("ascii"))


def edit_from_form(form: Mapping[str, str], captured_body: bytes) -> ReplayEdit:
    """The edit posted by the page's "Edit & replay" form.

    Every field is present in that form; a missing one means "as captured". ``body_mode`` is
    ``text`` (the ``body`` textarea), ``base64`` (the ``body_base64`` textarea) or ``keep``.
    """
    method = _check_method(form["method"]) if "method" in form else None
    path = _check_path(form["path"]) if "path" in form else None
    query = _check_query(form["query"]) if "query" in form else None
    headers = parse_header_lines(form["headers"]) if "headers" in form else None
    mode = form.get("body_mode", "keep")
    body: bytes | None = None
    if mode == "text":
        text = form.get("body", "")
        # Browsers submit textarea line breaks as CRLF whatever was shown; give the body back
        # the line endings it was captured with.
        text = text.replace("\r\n", "\n")
        if editable_body(captured_body).crlf:
            text = text.replace("\n", "\r\n")
        body = text.encode("utf-8")
    elif mode == "base64":
        body = _decode_base64(form.get("body_base64", ""), "the base64 body")
    elif mode != "keep":
        raise EditError("body_mode must be text, base64 or keep")
    return ReplayEdit(method, path, query, headers, body, resign=form.get("resign") == "on")


# --- re-signing ---------------------------------------------------------------------------------


def resign_plan(signing: Mapping[str, Any] | None, item: Mapping[str, Any]) -> tuple[str, str]:
    """The provider and secret to sign a replay of ``item`` with, or ``EditError`` saying why not.

    The bin's first secret is the current one (later ones are kept for rotation). With the
    provider ``auto``, the provider the request's verdict recognised is used.
    """
    secrets = [s for s in (signing or {}).get("secrets", []) if isinstance(s, str) and s.strip()]
    if not secrets:
        raise EditError(
            "this bin has no signing secret to re-sign with; add one under Signatures first"
        )
    provider = (signing or {}).get("provider", "auto")
    if provider == "auto":
        provider = (item.get("signature") or {}).get("provider")
        if not provider:
            raise EditError(
                "cannot re-sign: the bin's provider is auto and this request carries no "
                "signature of a known provider; choose the provider in the bin's signing settings"
            )
    if provider not in PROVIDERS:
        raise EditError(f"cannot re-sign with unknown provider {provider!r}")
    return provider, secrets[0]


def _set_headers(
    headers: list[tuple[str, str]], fresh: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """``headers`` with every name in ``fresh`` set to its new value, once.

    A replaced header keeps its place and the sender's spelling of its name; repeats of it are
    dropped (a receiver must see exactly one signature); new names go at the end.
    """
    new = {name.lower(): (name, value) for name, value in fresh}
    out: list[tuple[str, str]] = []
    placed: set[str] = set()
    for name, value in headers:
        key = name.lower()
        if key not in new:
            out.append((name, value))
        elif key not in placed:
            out.append((name, new[key][1]))
            placed.add(key)
    out += [pair for key, pair in new.items() if key not in placed]
    return out


def resign_headers(
    headers: list[tuple[str, str]],
    provider: str,
    secret: str,
    *,
    body: bytes,
    now: float,
    url: str = "",
    method: str = "POST",
) -> list[tuple[str, str]]:
    """``headers`` with the signature headers of ``provider`` made afresh for ``body`` at ``now``.

    ``url`` is the URL the receiver is called at (only Twilio signs it). Raises ``EditError``
    when the request cannot be signed (e.g. a Standard Webhooks secret that is not base64).
    """
    try:
        fresh = sign(provider, secret, body=body, now=now, headers=headers, url=url, method=method)
        if provider == "svix" and any(n.lower() == "webhook-signature" for n, _ in headers):
            # Svix also sends the Standard Webhooks spelling; a receiver may check either, so
            # a stale copy must not be left behind.
            fresh += sign("standard-webhooks", secret, body=body, now=now, headers=headers)
    except ValueError as exc:
        raise EditError(f"cannot re-sign for {provider}: {exc}") from None
    return _set_headers(headers, fresh)


# --- the outgoing request ---------------------------------------------------------------------


def _called_url(url: str, suffix: str) -> str:
    """The URL the target sees: the target URL with the sub-path and query appended."""
    try:
        return str(final_url(httpx.URL(url), suffix))
    except (httpx.InvalidURL, TypeError, ValueError, UnicodeError) as exc:
        raise TargetRefused(f"{url!r} is not a valid URL: {exc}") from None


def build_outgoing(
    item: Mapping[str, Any],
    captured_body: bytes,
    edit: ReplayEdit,
    *,
    signing: Mapping[str, Any] | None,
    url: str,
    now: float,
) -> Outgoing | None:
    """The request to send for ``edit`` of ``item``; None when it is the captured request as is.

    Raises ``EditError`` when re-signing is asked for but impossible, and ``TargetRefused`` when
    a Twilio re-sign needs a URL that is not one.
    """
    captured_headers = replay_headers([(name, value) for name, value in item["headers"]])
    method = item["method"] if edit.method is None else edit.method
    path = item["path"] if edit.path is None else edit.path
    query = item["query_string"] if edit.query is None else edit.query
    headers = captured_headers if edit.headers is None else list(edit.headers)
    body = captured_body if edit.body is None else edit.body
    edited = (method, path, query, headers, body) != (
        item["method"],
        item["path"],
        item["query_string"],
        captured_headers,
        captured_body,
    )
    suffix = path + (f"?{query}" if query else "")
    resigned = None
    if edit.resign:
        provider, secret = resign_plan(signing, item)
        target = _called_url(url, suffix) if provider == "twilio" else ""
        headers = resign_headers(
            headers, provider, secret, body=body, now=now, url=target, method=method
        )
        resigned = provider
    if not edited and resigned is None:
        return None
    framed = bool(body) or method.upper() in _BODY_METHODS
    framed = framed or any(
        name.lower() in ("content-length", "transfer-encoding") for name, _ in item["headers"]
    )
    return Outgoing(method, suffix, headers, body, framed, edited, resigned)


def outgoing_from_api(
    storage: Storage,
    settings: Settings,
    item: dict[str, Any],
    data: Mapping[str, Any],
    url: str,
) -> Outgoing | None:
    """The request to send for an API replay body; None for a plain replay (no edit fields).

    Raises ``EditError`` (400) or ``TargetRefused`` (422).
    """
    if all(data.get(key) is None or data.get(key) is False for key in EDIT_FIELDS):
        return None  # today's plain replay: not even the body is read here
    edit = edit_from_json(data)
    bin_ = storage.get_bin(item["bin_id"]) or {}
    if edit.resign and bin_:
        # The provider "auto" re-signs with what the verdict recognised: make it current.
        with_verdicts(storage, settings, bin_, [item])
    return build_outgoing(
        item,
        storage.get_body(item["seq"]),
        edit,
        signing=bin_.get("signing"),
        url=url,
        now=time.time(),
    )
