"""Twilio's signature: an HMAC over the called URL plus the sorted form parameters.

Unlike the other schemes the body is not signed as bytes: form bodies contribute their parsed
parameters, and JSON bodies are bound through a ``bodySHA256`` query parameter in the signed URL.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl, urlsplit

from app.signing.common import (
    Ctx,
    Headers,
    Invalid,
    Verdict,
    hmac_digest,
    match_secret,
    parse_b64,
    settle,
    show,
)

__all__ = ["candidate_urls", "form_params", "signature_algorithm", "signed_string", "verify_twilio"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def candidate_urls(url: str) -> list[tuple[str, str]]:
    """The URL as given, plus it with the default port added or removed.

    Twilio's own validator tries both because "their back end is inconsistent" about whether
    the default port is part of the signed URL. Returns ``(url, note)`` pairs.
    """
    if not url:
        raise Invalid("no public URL known for this request; a Twilio signature covers the URL")
    if len(url) > 16384:
        raise Invalid("the request URL is too long to check")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Invalid(f"the request URL {show(url)} cannot be parsed") from None
    if not parts.scheme or not parts.netloc:
        raise Invalid(f"the request URL {show(url)} is not absolute")
    candidates = [(url, "")]
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    start = url.find("//") + 2
    if default is None or url[start : start + len(parts.netloc)] != parts.netloc:
        return candidates
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if port is None and not hostport.endswith(":"):
        netloc = f"{userinfo}{at}{hostport}:{default}"
        note = f" (matched the URL with :{default} added)"
    elif port == default:
        netloc = f"{userinfo}{at}{hostport[: hostport.rfind(':')]}"
        note = f" (matched the URL without :{default})"
    else:
        return candidates
    candidates.append((url[:start] + netloc + url[start + len(parts.netloc) :], note))
    return candidates


def form_params(h: Headers, method: str, body: bytes) -> list[tuple[str, str]]:
    """Form parameters Twilio appends to the signed string (none for GET or non-form bodies)."""
    if method.upper() in ("GET", "HEAD"):
        return []
    ctype = (h.first("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return []
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("the form body is not UTF-8, so its parameters cannot be read") from None
    return parse_qsl(text, keep_blank_values=True)


def signed_string(url: str, params: list[tuple[str, str]]) -> bytes:
    """URL followed by name+value for each parameter, sorted by name then value.

    Mirrors twilio's RequestValidator.compute_signature, including its quirk of counting a
    repeated identical name=value pair once (``sorted(set(values))``).
    """
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    tail = "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))
    return (url + tail).encode("utf-8")


def signature_algorithm(h: Headers) -> str:
    """SHA1 normally; SharedKey webhooks name their algorithm in a settings header."""
    settings = h.get("X-Twilio-Webhooks-Signature-Settings")
    if settings is None:
        return "sha1"
    for part in settings.split(","):
        name, eq, value = part.partition("=")
        if eq and name.strip() == "algorithm" and value.strip():
            algo = value.strip().upper()
            if algo == "HMAC_SHA1":
                return "sha1"
            if algo == "HMAC_SHA256":
                return "sha256"
            raise Invalid(f"Twilio signature algorithm {show(value.strip())} is not supported")
    return "sha1"


def verify_twilio(c: Ctx) -> Verdict:
    """Check ``X-Twilio-Signature`` against each secret and each spelling of the URL."""
    value = c.headers.primary("X-Twilio-Signature")
    algorithm = signature_algorithm(c.headers)
    digest = parse_b64(value, 20 if algorithm == "sha1" else 32, "X-Twilio-Signature")
    urls = candidate_urls(c.url)
    query = parse_qsl(urlsplit(c.url).query, keep_blank_values=True)
    body_hashes = [v for k, v in query if k == "bodySHA256"]
    # JSON (non-form) bodies: the body is bound via bodySHA256 in the signed URL, not appended.
    params = [] if body_hashes else form_params(c.headers, c.method, c.body)

    for url, url_note in urls:
        signed = signed_string(url, params)
        index = match_secret(
            c.keys, [digest], lambda s, m=signed: hmac_digest(s.encode(), m, algorithm)
        )
        if index is None:
            continue
        if body_hashes:
            if len(body_hashes) > 1:
                raise Invalid("the URL has more than one bodySHA256 parameter")
            actual = hashlib.sha256(c.body).hexdigest().encode()
            if not hmac.compare_digest(actual, body_hashes[0].strip().lower().encode()):
                raise Invalid(
                    f"the body's SHA-256 differs from the bodySHA256 in the URL, so the body "
                    f"changed after signing; the URL signature itself matches this bin's "
                    f"secret #{index}"
                )
            return settle("twilio", index, note=url_note + "; the body matches bodySHA256")
        note = url_note
        if c.body and not params:
            note += "; the signature covers only the URL, the body is not signed"
        return settle("twilio", index, note=note)
    return settle("twilio", None)
