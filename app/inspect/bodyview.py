"""Turn a captured request body into something a template can show.

A captured body is the raw bytes exactly as they came off the wire: possibly compressed, possibly
lying about its type, possibly built to hurt whoever looks at it. ``build_view`` classifies it and
returns plain data (pretty JSON, form fields, multipart parts, text or a hex dump). Nothing here
produces HTML: templates escape every string, so hostile text is returned unchanged.

Everything is defensive. Decompression is capped so a gzip bomb costs at most ``max_decoded``
bytes, JSON nesting is checked before parsing, multipart is split with a linear scanner and a part
cap, declared charsets are vetted, and ``build_view`` turns any unexpected failure into a raw view
rather than an exception. The stored body is never modified; decoding happens for the view only.
"""

from __future__ import annotations

import codecs
import json
import operator
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, count
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

__all__ = ["BodyView", "Part", "build_view", "hex_dump", "human_size"]

MAX_JSON_DEPTH = 200
MAX_PARTS = 1000
MAX_FORM_FIELDS = 10_000
MAX_PART_HEADERS = 100
PART_TEXT_LIMIT = 64 << 10
# A part without a blank line is taken as headers only up to this size; bigger is content.
_MAX_HEAD = 16 << 10
_MAX_HEAD_LINES = 4 * MAX_PART_HEADERS
_MAX_CODINGS = 4
# Decompress in steps of this many output bytes so that, when a stream turns out to be corrupt,
# at most one step of already-inflated output is lost.
_INFLATE_STEP = 64 << 10
# Indented JSON can be far bigger than its source (deep nesting times many small values), so the
# pretty text gets its own cap relative to the view cap.
_PRETTY_FACTOR = 4

# Codecs that are text encodings to Python but must not be run on hostile input: punycode decodes
# in quadratic time, the escape codecs interpret backslashes, "undefined" always fails.
_UNSAFE_CODECS = frozenset(
    {"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined"}
)
_CHARSET_RE = re.compile(r"[A-Za-z0-9._:+-]{1,40}")

# C0 controls other than tab, LF and CR, plus DEL and the C1 range: text containing any of these
# is treated as binary when sniffing.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")

# A JSON string, possibly unterminated: the optional closing quote keeps the scan linear (an
# unterminated string swallows the rest instead of being retried from every later quote).
_JSON_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NON_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_BRACKET_WEIGHTS = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})

# "; name=value" with value a quoted-string (unterminated tolerated) or a token-ish run.
_PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*(?:=\s*("[^"\\]*(?:\\.[^"\\]*)*"?|[^;]*))?', re.S)
_QUOTED_PAIR_RE = re.compile(r'\\(["\\])')

_FORM_FIELD_RE = re.compile(r"[^&]+")
_BLANK_LINE_RE = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT_RE = re.compile(rb"\r?\n")
_HEADER_LINE_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*:")

_PRINTABLE = bytes(b if 0x20 <= b < 0x7F else ord(".") for b in range(256))

_JSON_TYPES = frozenset({"application/json", "text/json", "application/x-json"})
_FORM_TYPE = "application/x-www-form-urlencoded"
_TEXT_TYPES = frozenset(
    {
        "application/xml",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-yaml",
        "application/yaml",
        "application/graphql",
        "application/sql",
        "application/toml",
        "application/csv",
        "application/x-sh",
        _FORM_TYPE,
    }
)


@dataclass
class Part:
    """One part of a multipart body.

    ``filename`` is exactly as sent (``../../etc/passwd`` included): it is for display and must
    never be used as a path. ``size`` is the exact byte length of the part's content.
    """

    name: str | None
    filename: str | None
    content_type: str | None
    size: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    text: str | None = None


@dataclass
class BodyView:
    """What the template shows for a body; exactly one of the payload fields fits ``kind``.

    kind: "empty" | "json" | "form" | "multipart" | "text" | "binary". ``pretty`` goes with
    json, ``fields`` with form, ``parts`` with multipart, ``text`` with text and ``hex_lines``
    with binary.
    """

    kind: str
    decoded_from: str | None = None
    note: str | None = None
    pretty: str | None = None
    fields: list[tuple[str, str]] | None = None
    parts: list[Part] | None = None
    text: str | None = None
    hex_lines: list[str] | None = None


# --------------------------------------------------------------------------------------------
# small helpers


def human_size(n: int) -> str:
    """A byte count for people: "0 B", "512 B", "1.5 KiB", "25.0 MiB"."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        # Compare the rounded value so 1048575 bytes reads "1.0 MiB", not "1024.0 KiB".
        if round(value, 1) < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _size_label(n: int) -> str:
    # Notes read better with round limits spelled "1 MiB" rather than "1.0 MiB".
    return human_size(n).replace(".0 ", " ")


def hex_dump(data: bytes, cap: int) -> tuple[list[str], bool]:
    """Classic ``hexdump -C`` lines for the first ``cap`` bytes of ``data``.

    Each line is an 8-digit hex offset, 16 bytes in two groups of 8 and an ASCII column with "."
    for anything not printable. Returns the lines and whether ``data`` was longer than ``cap``.
    """
    shown = data[: max(cap, 0)]
    lines = []
    for off in range(0, len(shown), 16):
        row = shown[off : off + 16]
        left = row[:8].hex(" ")
        right = row[8:].hex(" ")
        text = row.translate(_PRINTABLE).decode("ascii")
        lines.append(f"{off:08x}  {left:<23}  {right:<23}  |{text}|")
    return lines, len(data) > len(shown)


def _as_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        # Not expected, but a str body still deserves a view rather than an error.
        return body.encode("utf-8", "surrogateescape")
    return bytes(body)


def _header_values(headers: Iterable[Any] | None, name: str) -> list[str]:
    """All values of header ``name`` (case-insensitive), in order; odd entries are skipped."""
    wanted = name.lower()
    out = []
    if isinstance(headers, Mapping):
        headers = headers.items()
    for item in headers or ():
        try:
            key, value = item
        except (TypeError, ValueError):
            continue
        if str(key).strip().lower() == wanted:
            out.append(str(value))
    return out


def _parse_params(value: str) -> tuple[str, dict[str, str]]:
    """Split a header like Content-Type into its lower-cased first token and its parameters.

    Parameter names are lower-cased; the first occurrence of a name wins. Quoted values lose their
    quotes and ``\\"`` / ``\\\\`` escapes; other backslashes are kept literally because browsers
    send Windows paths (``C:\\dir\\x.png``) unescaped.
    """
    head, sep, _rest = value.partition(";")
    params: dict[str, str] = {}
    if sep:
        for m in _PARAM_RE.finditer(value, len(head)):
            key = m.group(1).lower()
            raw = (m.group(2) or "").strip()
            if raw.startswith('"'):
                raw = raw[1:-1] if len(raw) > 1 and raw.endswith('"') else raw[1:]
                raw = _QUOTED_PAIR_RE.sub(r"\1", raw)
            params.setdefault(key, raw)
    return head.strip().lower(), params


def _codec(charset: str | None) -> str | None:
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
    # Some codecs (utf-7 for one) can yield lone surrogates, which cannot be encoded into the
    # UTF-8 response later; replace them so the template never fails.
    if text.isascii():
        return text
    return _SURROGATE_RE.sub("\ufffd", text)


def _decode(data: bytes, codec: str, *, final: bool) -> str:
    """Strict decode; raises UnicodeError (or ValueError) when ``data`` is not valid."""
    # An incremental decoder with final=False drops a multi-byte sequence cut off by truncation
    # instead of treating it as invalid.
    return codecs.getincrementaldecoder(codec)("strict").decode(data, final)


def _decode_lossy(data: bytes, codec: str, *, final: bool = True) -> str:
    """Decode with U+FFFD for invalid bytes; never raises."""
    try:
        text = codecs.getincrementaldecoder(codec)("replace").decode(data, final)
    except (UnicodeError, ValueError):
        # Some decoders fail outright whatever the error handler, e.g. UTF-16 without a BOM.
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(data, final)
    return _clean(text)


def _is_json_type(mime: str) -> bool:
    return mime in _JSON_TYPES or (mime.startswith("application/") and mime.endswith("+json"))


def _is_text_type(mime: str) -> bool:
    if mime.startswith("text/") or mime in _TEXT_TYPES:
        return True
    subtype = mime.partition("/")[2]
    return subtype.endswith("+xml") or subtype == "xml" or "javascript" in subtype


# --------------------------------------------------------------------------------------------
# Content-Encoding


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


def _undo_encodings(data: bytes, codings: list[str], limit: int) -> tuple[str, bytes, list[str]]:
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


# --------------------------------------------------------------------------------------------
# classification


def _text_or_binary(
    data: bytes, charset: str | None, *, final: bool, declared: bool, notes: list[str]
) -> BodyView:
    """Text when the bytes can be shown as text, otherwise a hex dump.

    ``declared`` means the sender said it is text: then invalid bytes are replaced rather than
    sending the body to the hex view, unless it holds NUL bytes.
    """
    codec = _codec(charset)
    if charset and codec is None:
        notes.append(f"unknown charset {charset[:40]!r}; decoded as UTF-8")
    codec = codec or "utf-8"
    try:
        text: str | None = _decode(data, codec, final=final)
    except (UnicodeError, ValueError):
        text = None
    if declared:
        if text is None:
            text = _decode_lossy(data, codec, final=final)
            notes.append(f"invalid {codec} bytes replaced with U+FFFD")
        if "\x00" in text:
            notes.append("declared as text but contains NUL bytes; shown as binary")
            return BodyView(kind="binary")
        return BodyView(kind="text", text=_clean(text))
    if text is not None and not _CONTROL_RE.search(text):
        return BodyView(kind="text", text=_clean(text))
    return BodyView(kind="binary")


def _json_too_deep(text: str, limit: int) -> bool:
    """Whether brackets nest deeper than ``limit``, found without recursion."""
    # Cheap bound first: without enough opening brackets the depth cannot exceed the limit.
    if text.count("[") + text.count("{") <= limit:
        return False
    # Strings go first so brackets inside them don't count; then only brackets are left.
    brackets = _NON_BRACKET_RE.sub("", _JSON_STRING_RE.sub("", text))
    # Openers become 2 and closers 0: after the i-th bracket the running sum is 2 * opened, so the
    # depth there is sum - i. All of it runs in C iterators, which matters for a megabyte of "[]".
    weights = brackets.translate(_BRACKET_WEIGHTS).encode("latin-1")
    return max(map(operator.sub, accumulate(weights), count(1)), default=0) > limit


class _PairsDict(dict):  # type: ignore[type-arg]
    """A JSON object with duplicate keys: ``items()`` yields every pair so all are printed.

    The json encoder walks objects via ``items()``, so this keeps what the sender sent instead of
    silently showing only the last value of a repeated key.
    """

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return self._pairs


def _parse_json(text: str) -> tuple[Any, bool]:
    duplicates = False

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal duplicates
        obj = dict(pairs)
        if len(obj) != len(pairs):
            duplicates = True
            return _PairsDict(pairs)
        return obj

    return json.loads(text, object_pairs_hook=pairs_hook), duplicates


def _pretty_json(value: Any, cap: int) -> tuple[str, bool]:
    """Indented JSON text, cut at ``cap`` characters; returns (text, truncated)."""
    chunks = []
    size = 0
    encoder = json.JSONEncoder(indent=2, ensure_ascii=False)
    for chunk in encoder.iterencode(value):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return _escape_surrogates("".join(chunks)[:cap]), True
    return _escape_surrogates("".join(chunks)), False


def _escape_surrogates(pretty: str) -> str:
    if not pretty.isascii():
        # Lone surrogates only occur inside JSON strings; write them back as the escapes they
        # came from so the text stays valid JSON and encodable.
        pretty = _SURROGATE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", pretty)
    return pretty


def _json_view(
    data: bytes, charset: str | None, *, final: bool, sniffed: bool, cap: int, notes: list[str]
) -> BodyView | None:
    """JSON view, or a text fallback with a note; None when a sniffed body is not JSON."""

    def fallback(reason: str) -> BodyView | None:
        if sniffed:
            return None
        notes.append(reason)
        return _text_or_binary(data, charset, final=final, declared=True, notes=notes)

    if not final:
        return fallback("JSON view truncated; shown as text")
    codec = _codec(charset) or "utf-8"
    try:
        # JSON is UTF-8; a BOM is tolerated rather than rejected as json.loads would.
        text = data.decode("utf-8-sig" if codec == "utf-8" else codec)
    except (UnicodeError, ValueError):
        return fallback(f"JSON is not valid {codec}; shown as text")
    if _json_too_deep(text, MAX_JSON_DEPTH):
        return fallback(f"JSON nesting deeper than {MAX_JSON_DEPTH} levels; shown as text")
    try:
        value, duplicates = _parse_json(text)
    except json.JSONDecodeError as exc:
        return fallback(
            f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); shown as text"
        )
    except (ValueError, RecursionError) as exc:
        # ValueError: e.g. an integer longer than Python's int/str conversion limit.
        return fallback(f"invalid JSON ({str(exc)[:100]}); shown as text")
    pretty, truncated = _pretty_json(value, max(cap, 1) * _PRETTY_FACTOR)
    if duplicates:
        notes.append("JSON has duplicate object keys; all are shown")
    if truncated:
        notes.append(f"pretty-printed JSON truncated at {_size_label(len(pretty))}")
    return BodyView(kind="json", pretty=pretty)


def _form_view(data: bytes, charset: str | None, notes: list[str]) -> BodyView:
    """Form fields in order, repeats and blank values kept."""
    codec = _codec(charset)
    # latin-1 maps every byte to one character, so parsing never fails and each name/value can
    # be turned back into its exact bytes before the real decoding below.
    raw = data.decode("latin-1")
    # parse_qsl is slow per field; cut the input after the last field that will be shown rather
    # than parsing half a million fields to throw most of them away.
    for i, m in enumerate(_FORM_FIELD_RE.finditer(raw)):
        if i == MAX_FORM_FIELDS:
            total = sum(1 for _ in _FORM_FIELD_RE.finditer(raw))
            notes.append(f"{total} form fields; showing the first {MAX_FORM_FIELDS}")
            raw = raw[: m.start()]
            break
    pairs = parse_qsl(raw, keep_blank_values=True, encoding="latin-1")

    def text(value: str) -> str:
        raw = value.encode("latin-1")
        if codec:
            return _decode_lossy(raw, codec)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    return BodyView(kind="form", fields=[(text(k), text(v)) for k, v in pairs])


# --------------------------------------------------------------------------------------------
# multipart


def _delimiter_re(dash: bytes) -> re.Pattern[bytes]:
    """A pattern for the line break that starts a delimiter line.

    A delimiter line is "--boundary" followed by "--", or by optional blanks and a line end (or
    the end of the data); "--boundary" followed by anything else is content. One regex search per
    part keeps hostile near-misses ("--boundaryX" a million times) at C speed.
    """
    return re.compile(rb"\n" + re.escape(dash) + rb"(?:--|[ \t]*(?:[\r\n]|\Z))")


def _find_delimiter(delimiter: re.Pattern[bytes], data: bytes, start: int) -> int:
    """Index of the newline starting the next delimiter line at or after ``start``, or -1."""
    m = delimiter.search(data, start)
    return m.start() if m else -1


def _decode_header_value(raw: bytes) -> str:
    # Browsers send raw UTF-8 in multipart headers (filenames); fall back to latin-1, which never
    # fails, for anything else.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _ext_value(value: str) -> str:
    """Decode an RFC 5987/2231 extended value: charset'language'percent-encoded."""
    pieces = value.split("'", 2)
    charset, encoded = (pieces[0], pieces[2]) if len(pieces) == 3 else ("", value)
    raw = unquote_to_bytes(encoded)
    return _decode_lossy(raw, _codec(charset) or "utf-8")


def _parse_part(raw: bytes) -> Part:
    if raw[:1] == b"\n" or raw[:2] == b"\r\n":
        # No headers at all: the blank line comes first.
        head, content = b"", raw[raw.index(b"\n") + 1 :]
    elif (blank := _BLANK_LINE_RE.search(raw)) is not None:
        head, content = raw[: blank.start()], raw[blank.end() :]
    else:
        # No blank line: a part cut off within its headers, or one with no headers at all.
        lines = [line for line in _LINE_SPLIT_RE.split(raw[:_MAX_HEAD]) if line]
        if len(raw) <= _MAX_HEAD and all(
            _HEADER_LINE_RE.match(line) or line[:1] in b" \t" for line in lines
        ):
            head, content = raw, b""
        else:
            head, content = b"", raw

    # Only the first lines are looked at: enough for MAX_PART_HEADERS plus some folding, without
    # building a list of (or repeatedly joining) a hostile part's 100k header lines.
    head_lines = _LINE_SPLIT_RE.split(head, maxsplit=_MAX_HEAD_LINES)
    if len(head_lines) > _MAX_HEAD_LINES:
        head_lines.pop()  # the unsplit remainder
    headers: list[tuple[str, str]] = []
    for line in head_lines:
        if line[:1] in (b" ", b"\t") and headers:
            # Obsolete line folding: a continuation of the previous header.
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {_decode_header_value(line.strip())}")
            continue
        name_b, colon, value_b = line.partition(b":")
        if not colon or not name_b.strip():
            continue
        if len(headers) >= MAX_PART_HEADERS:
            break
        headers.append((name_b.strip().decode("latin-1"), _decode_header_value(value_b.strip())))

    content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
    disposition = next((v for k, v in headers if k.lower() == "content-disposition"), None)
    name = filename = None
    if disposition is not None:
        _kind, params = _parse_params(disposition)
        # RFC 6266: the extended filename* (any charset) takes precedence over plain filename.
        name = _ext_value(params["name*"]) if "name*" in params else params.get("name")
        if "filename*" in params:
            filename = _ext_value(params["filename*"])
        else:
            filename = params.get("filename")

    text = None
    if len(content) <= PART_TEXT_LIMIT:
        mime, ct_params = _parse_params(content_type) if content_type else ("", {})
        declared = _is_text_type(mime) or _is_json_type(mime)
        view = _text_or_binary(
            content, ct_params.get("charset"), final=True, declared=declared, notes=[]
        )
        text = view.text
    return Part(
        name=name,
        filename=filename,
        content_type=content_type,
        size=len(content),
        headers=headers,
        text=text,
    )


def _multipart_view(data: bytes, boundary: str, notes: list[str]) -> BodyView | None:
    """Split a multipart body; None when no delimiter line is found at all."""
    try:
        dash = b"--" + boundary.encode("latin-1")
    except UnicodeEncodeError:
        dash = b"--" + boundary.encode("utf-8", "replace")
    delimiter = _delimiter_re(dash)
    if data.startswith(dash):
        pos = 0
    else:
        first = _find_delimiter(delimiter, data, 0)
        if first < 0:
            return None
        pos = first + 1  # anything before the first delimiter is preamble
    parts: list[Part] = []
    closed = False
    while True:
        after = pos + len(dash)
        if data.startswith(b"--", after):
            closed = True
            break
        if len(parts) >= MAX_PARTS:
            notes.append(f"more than {MAX_PARTS} parts; showing the first {MAX_PARTS}")
            closed = True  # not truncated, only capped: don't add a second note
            break
        line_end = data.find(b"\n", after)
        if line_end < 0:
            break  # data ends on a delimiter line
        start = line_end + 1
        nxt = _find_delimiter(delimiter, data, line_end)
        if nxt < 0:
            parts.append(_parse_part(data[start:]))
            break
        # The line break before a delimiter belongs to the delimiter, not to the content.
        end = nxt - 1 if nxt > 0 and data[nxt - 1 : nxt] == b"\r" else nxt
        parts.append(_parse_part(data[start:end] if end > start else b""))
        pos = nxt + 1
    if not closed:
        notes.append("multipart body ends without a closing boundary")
    return BodyView(kind="multipart", parts=parts)


# --------------------------------------------------------------------------------------------
# entry point


def _classify(
    data: bytes, content_type: str | None, *, final: bool, cap: int, notes: list[str]
) -> BodyView:
    mime, params = _parse_params(content_type) if content_type else ("", {})
    charset = params.get("charset")
    if not data:
        return BodyView(kind="empty")
    if _is_json_type(mime):
        view = _json_view(data, charset, final=final, sniffed=False, cap=cap, notes=notes)
        assert view is not None  # only sniffed bodies yield None
        return view
    if mime == _FORM_TYPE:
        return _form_view(data, charset, notes)
    if mime.startswith("multipart/"):
        boundary = params.get("boundary", "")
        if not boundary:
            notes.append("multipart body without a boundary parameter; parts not split")
        else:
            view = _multipart_view(data, boundary, notes)
            if view is not None:
                return view
            notes.append("multipart boundary not found in the body; parts not split")
        return _text_or_binary(data, charset, final=final, declared=False, notes=notes)
    if _is_text_type(mime):
        return _text_or_binary(data, charset, final=final, declared=True, notes=notes)
    if not mime and data.lstrip(b" \t\r\n")[:1] in (b"{", b"["):
        view = _json_view(data, charset, final=final, sniffed=True, cap=cap, notes=notes)
        if view is not None:
            return view
    return _text_or_binary(data, charset, final=final, declared=False, notes=notes)


def _build(body: Any, headers: Sequence[Any] | None, max_decoded: int, hex_cap: int) -> BodyView:
    data = _as_bytes(body)
    if not data:
        return BodyView(kind="empty")
    max_decoded = max(max_decoded, 0)
    notes: list[str] = []
    decoded_from = None
    final = True

    codings = [
        token.strip().lower()
        for value in _header_values(headers, "content-encoding")
        for token in value.split(",")
    ]
    codings = ["gzip" if c == "x-gzip" else c for c in codings if c and c != "identity"]
    if codings:
        status, decoded, coding_notes = _undo_encodings(data, codings, max_decoded)
        notes += coding_notes
        if status == "unsupported":
            # The bytes are still compressed, so only a hex view makes sense.
            lines, truncated = hex_dump(data, hex_cap)
            if truncated:
                notes.append(f"hex dump shows the first {_size_label(hex_cap)}")
            return BodyView(kind="binary", note="; ".join(notes), hex_lines=lines)
        if status in ("decoded", "capped"):
            data = decoded
            decoded_from = ", ".join(codings)
            if status == "capped":
                notes.append(f"decoded view truncated at {_size_label(max_decoded)}")
                final = False
        # Invalid data falls through with the raw bytes: a sender that set Content-Encoding
        # without compressing still gets a readable view.
    if decoded_from is None and len(data) > max_decoded:
        notes.append(
            f"body is {human_size(len(data))}; view truncated at {_size_label(max_decoded)}"
        )
        data = data[:max_decoded]
        final = False

    content_type = next(iter(_header_values(headers, "content-type")), None)
    view = _classify(data, content_type, final=final, cap=max_decoded, notes=notes)
    if view.kind == "binary":
        view.hex_lines, truncated = hex_dump(data, hex_cap)
        if truncated:
            notes.append(f"hex dump shows the first {_size_label(hex_cap)}")
    view.decoded_from = decoded_from
    view.note = "; ".join(notes) or None
    return view


def build_view(
    body: bytes,
    headers: list[tuple[str, str]],
    *,
    max_decoded: int = 1 << 20,
    hex_cap: int = 64 << 10,
) -> BodyView:
    """Classify a captured body and prepare it for display.

    ``headers`` is the captured list of (name, value) pairs; lookups are case-insensitive.
    gzip/x-gzip/deflate Content-Encoding is undone for the view only, capped at ``max_decoded``
    bytes (also the cap for an uncompressed body's view). Binary views carry a hex dump of at most
    ``hex_cap`` bytes. Malformed or hostile input yields a fallback view with a note; this
    function does not raise.
    """
    try:
        return _build(body, headers, max_decoded, hex_cap)
    except Exception as exc:
        # Last resort: the classifiers above are meant to handle everything, but a body view
        # must never take the request page down with it.
        try:
            data = _as_bytes(body)
        except Exception:
            data = b""
        if not data:
            return BodyView(kind="empty")
        lines, _truncated = hex_dump(data, hex_cap)
        return BodyView(
            kind="binary",
            note=f"could not build a view ({type(exc).__name__}); shown raw",
            hex_lines=lines,
        )
