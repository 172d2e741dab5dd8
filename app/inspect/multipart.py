"""Multipart bodies split into parts with a linear scanner, capped in parts and header lines."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from app.inspect.decode import as_text, charset_codec, decode_lossy
from app.inspect.mime import is_json_type, is_text_type, parse_params

__all__ = ["MAX_PARTS", "Part", "multipart_parts"]

MAX_PARTS = 1000
MAX_PART_HEADERS = 100
#: Parts up to this size get a text rendering; bigger ones only their size.
PART_TEXT_LIMIT = 64 << 10
# A part without a blank line is taken as headers only up to this size; bigger is content.
_MAX_HEAD = 16 << 10
_MAX_HEAD_LINES = 4 * MAX_PART_HEADERS

_BLANK_LINE_RE = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT_RE = re.compile(rb"\r?\n")
_HEADER_LINE_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*:")


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
    return decode_lossy(raw, charset_codec(charset) or "utf-8")


def _parse_part(raw: bytes) -> Part:
    """One part from its raw bytes: headers up to the blank line, then content."""
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
        _kind, params = parse_params(disposition)
        # RFC 6266: the extended filename* (any charset) takes precedence over plain filename.
        name = _ext_value(params["name*"]) if "name*" in params else params.get("name")
        if "filename*" in params:
            filename = _ext_value(params["filename*"])
        else:
            filename = params.get("filename")

    text = None
    if len(content) <= PART_TEXT_LIMIT:
        mime, ct_params = parse_params(content_type) if content_type else ("", {})
        declared = is_text_type(mime) or is_json_type(mime)
        text = as_text(content, ct_params.get("charset"), final=True, declared=declared, notes=[])
    return Part(
        name=name,
        filename=filename,
        content_type=content_type,
        size=len(content),
        headers=headers,
        text=text,
    )


def multipart_parts(data: bytes, boundary: str, notes: list[str]) -> list[Part] | None:
    """Split a multipart body into its parts; None when no delimiter line is found at all."""
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
    return parts
