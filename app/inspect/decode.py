"""Bytes to text for the body view: vetted charsets, content codings and capped inflating.

Decompression is capped so a gzip bomb costs at most the view's limit, declared charsets are
checked against a list of codecs that are safe on hostile input, and every decoded string can be
encoded into a UTF-8 response.
"""

from __future__ import annotations

import codecs
import re
import zlib

from app.inspect.display import human_size

__all__ = [
    "SURROGATE_RE",
    "as_text",
    "charset_codec",
    "decode_lossy",
    "undo_encodings",
]

_MAX_CODINGS = 4
# Decompress in steps of this many output bytes so that, when a stream turns out to be corrupt,
# at most one step of already-inflated output is lost.
_INFLATE_STEP = 64 << 10

# Codecs that are text encodings to Python but must not be run on hostile input: punycode decodes
# in quadratic time, the escape codecs interpret backslashes, "undefined" always fails.
_UNSAFE_CODECS = frozenset(
    {"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined"}
)

_CHARSET_RE = re.compile(r"[A-Za-z0-9._:+-]{1,40}")
# C0 controls other than tab, LF and CR, plus DEL and the C1 range: text containing any of these
# is treated as binary when sniffing.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


def charset_codec(charset: str | None) -> str | None:
    """The Python codec for a declared charset, or None when it is unknown or unsafe."""
    if not charset:
        return None
    charset = charset.strip().strip("\"'")
    if not _CHARSET_RE.fullmatch(charset):
        return None
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):
        return None
    # Non-text codecs (base64, zlib, bz2...) are refused by bytes.decode anyway; checking here
    # keeps the "unknown charset" note honest.
    if info.name in _UNSAFE_CODECS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _clean(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD."""
    # Some codecs (utf-7 for one) can yield lone surrogates, which cannot be encoded into the
    # UTF-8 response later; replace them so the template never fails.
    if text.isascii():
        return text
    return SURROGATE_RE.sub("\ufffd", text)


def _decode_strict(data: bytes, codec: str, *, final: bool) -> str:
    """Strict decode; raises UnicodeError (or ValueError) when ``data`` is not valid."""
    # An incremental decoder with final=False drops a multi-byte sequence cut off by truncation
    # instead of treating it as invalid.
    return codecs.getincrementaldecoder(codec)("strict").decode(data, final)


def decode_lossy(data: bytes, codec: str, *, final: bool = True) -> str:
    """Decode with U+FFFD for invalid bytes; never raises."""
    try:
        text = codecs.getincrementaldecoder(codec)("replace").decode(data, final)
    except (UnicodeError, ValueError):
        # Some decoders fail outright whatever the error handler, e.g. UTF-16 without a BOM.
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(data, final)
    return _clean(text)


def as_text(
    data: bytes, charset: str | None, *, final: bool, declared: bool, notes: list[str]
) -> str | None:
    """The bytes as text when they can be shown as text, or ``None`` for a hex dump.

    ``declared`` means the sender said it is text: then invalid bytes are replaced rather than
    sending the body to the hex view, unless it holds NUL bytes.
    """
    codec = charset_codec(charset)
    if charset and codec is None:
        notes.append(f"unknown charset {charset[:40]!r}; decoded as UTF-8")
    codec = codec or "utf-8"
    try:
        text: str | None = _decode_strict(data, codec, final=final)
    except (UnicodeError, ValueError):
        text = None
    if declared:
        if text is None:
            text = decode_lossy(data, codec, final=final)
            notes.append(f"invalid {codec} bytes replaced with U+FFFD")
        if "\x00" in text:
            notes.append("declared as text but contains NUL bytes; shown as binary")
            return None
        return _clean(text)
    if text is not None and not _CONTROL_RE.search(text):
        return _clean(text)
    return None


def _inflate(data: bytes, wbits: int, limit: int) -> tuple[bytes, str, bytes]:
    """Inflate one zlib/gzip/raw-deflate stream, never producing more than ``limit`` + 1 bytes.

    Returns (output, status, unused input after the stream). Status is "ok" (stream ended),
    "capped" (output cut at ``limit``), "incomplete" (input ran out) or "error" (corrupt data).
    """
    d = zlib.decompressobj(wbits)
    out = bytearray()
    buf = data
    while True:
        # max_length must stay >= 1: zero means "unlimited" to zlib.
        room = min(_INFLATE_STEP, limit + 1 - len(out))
        try:
            chunk = d.decompress(buf, room)
        except zlib.error:
            return bytes(out), "error", b""
        out += chunk
        if len(out) > limit:
            del out[limit:]  # in place: no second copy of a possibly large buffer
            return bytes(out), "capped", b""
        if d.eof:
            return bytes(out), "ok", d.unused_data
        tail = d.unconsumed_tail
        # With all input consumed zlib may still hold output; only a short chunk proves it has
        # nothing more. A call that neither consumed nor produced anything would loop forever.
        if (not tail and len(chunk) < room) or (not chunk and len(tail) == len(buf)):
            return bytes(out), "incomplete", b""
        buf = tail


def _undo_coding(data: bytes, coding: str, limit: int) -> tuple[bytes, str, list[str]]:
    """Undo one gzip or deflate layer. Returns (output, status, notes) like ``_inflate``."""
    notes: list[str] = []
    # wbits 47 accepts both gzip and zlib framing; senders mix the two up.
    out, status, unused = _inflate(data, 32 + zlib.MAX_WBITS, limit)
    if coding == "deflate" and status == "error" and not out:
        # "deflate" is meant to be zlib-wrapped, but many senders use raw deflate.
        out, status, unused = _inflate(data, -zlib.MAX_WBITS, limit)
    # gzip allows several members back to back (what `cat a.gz b.gz` produces).
    while status == "ok" and unused[:2] == b"\x1f\x8b" and len(out) < limit:
        more, status, rest = _inflate(unused, 16 + zlib.MAX_WBITS, limit - len(out))
        out += more
        unused = rest if status == "ok" else b""
    if status == "ok" and unused:
        notes.append(
            f"{human_size(len(unused))} of trailing data after the {coding} stream ignored"
        )
    return out, status, notes


def undo_encodings(data: bytes, codings: list[str], limit: int) -> tuple[str, bytes, list[str]]:
    """Undo Content-Encoding layers for the view.

    Returns (status, bytes, notes). Status is "decoded", "capped" (decoded but cut at
    ``limit``), "unsupported" or "invalid"; for the last two the bytes are the raw input.
    """
    for coding in codings:
        if coding not in ("gzip", "deflate"):
            note = f"Content-Encoding {coding[:40]!r} is not supported; shown raw"
            return "unsupported", data, [note]
    if len(codings) > _MAX_CODINGS:
        return "unsupported", data, ["too many Content-Encoding layers; shown raw"]
    notes: list[str] = []
    capped = False
    out = data
    # Codings are listed in the order they were applied, so undo them last first.
    for coding in reversed(codings):
        out, status, layer_notes = _undo_coding(out, coding, limit)
        notes += layer_notes
        if status in ("error", "incomplete"):
            if not out:
                return "invalid", data, [f"invalid {coding} data; shown raw"]
            problem = "corrupt" if status == "error" else "truncated"
            notes.append(
                f"{coding} data is {problem} after {human_size(len(out))}; showing what decoded"
            )
        capped = capped or status == "capped"
    return ("capped" if capped else "decoded"), out, notes
