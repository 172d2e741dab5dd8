"""Turn a captured request body into something a template can show.

A captured body is the raw bytes exactly as they came off the wire: possibly compressed, possibly
lying about its type, possibly built to hurt whoever looks at it. ``build_view`` classifies it and
returns plain data (pretty JSON, form fields, multipart parts, text or a hex dump). Nothing here
produces HTML: templates escape every string, so hostile text is returned unchanged.

Everything is defensive: the decoders (``decode``, ``jsonview``, ``multipart``) cap what hostile
input can cost, and ``build_view`` turns any unexpected failure into a raw view rather than an
exception. The stored body is never modified; decoding happens for the view only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from app.core.bytes import as_bytes
from app.inspect.decode import as_text, charset_codec, decode_lossy, undo_encodings
from app.inspect.display import hex_dump, human_size, size_label
from app.inspect.jsonview import NotJson, pretty_json
from app.inspect.mime import FORM_TYPE, header_values, is_json_type, is_text_type, parse_params
from app.inspect.multipart import Part, multipart_parts

__all__ = ["BodyView", "build_view"]

MAX_FORM_FIELDS = 10_000

_FORM_FIELD_RE = re.compile(r"[^&]+")


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


def _text_or_binary(
    data: bytes, charset: str | None, *, final: bool, declared: bool, notes: list[str]
) -> BodyView:
    """A text view when the bytes can be shown as text, otherwise a binary one (see ``as_text``)."""
    text = as_text(data, charset, final=final, declared=declared, notes=notes)
    return BodyView(kind="binary") if text is None else BodyView(kind="text", text=text)


def _json_view(
    data: bytes, charset: str | None, *, final: bool, sniffed: bool, cap: int, notes: list[str]
) -> BodyView | None:
    """JSON view, or a text fallback with a note; None when a sniffed body is not JSON."""
    try:
        pretty = pretty_json(data, charset, final=final, cap=cap, notes=notes)
    except NotJson as exc:
        if sniffed:
            return None
        notes.append(exc.reason)
        return _text_or_binary(data, charset, final=final, declared=True, notes=notes)
    return BodyView(kind="json", pretty=pretty)


def _form_view(data: bytes, charset: str | None, notes: list[str]) -> BodyView:
    """Form fields in order, repeats and blank values kept."""
    codec = charset_codec(charset)
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
            return decode_lossy(raw, codec)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    return BodyView(kind="form", fields=[(text(k), text(v)) for k, v in pairs])


def _classify(
    data: bytes, content_type: str | None, *, final: bool, cap: int, notes: list[str]
) -> BodyView:
    mime, params = parse_params(content_type) if content_type else ("", {})
    charset = params.get("charset")
    if not data:
        return BodyView(kind="empty")
    if is_json_type(mime):
        view = _json_view(data, charset, final=final, sniffed=False, cap=cap, notes=notes)
        assert view is not None  # only sniffed bodies yield None
        return view
    if mime == FORM_TYPE:
        return _form_view(data, charset, notes)
    if mime.startswith("multipart/"):
        boundary = params.get("boundary", "")
        if not boundary:
            notes.append("multipart body without a boundary parameter; parts not split")
        else:
            parts = multipart_parts(data, boundary, notes)
            if parts is not None:
                return BodyView(kind="multipart", parts=parts)
            notes.append("multipart boundary not found in the body; parts not split")
        return _text_or_binary(data, charset, final=final, declared=False, notes=notes)
    if is_text_type(mime):
        return _text_or_binary(data, charset, final=final, declared=True, notes=notes)
    if not mime and data.lstrip(b" \t\r\n")[:1] in (b"{", b"["):
        view = _json_view(data, charset, final=final, sniffed=True, cap=cap, notes=notes)
        if view is not None:
            return view
    return _text_or_binary(data, charset, final=final, declared=False, notes=notes)


def _build(body: Any, headers: Sequence[Any] | None, max_decoded: int, hex_cap: int) -> BodyView:
    data = as_bytes(body)
    if not data:
        return BodyView(kind="empty")
    max_decoded = max(max_decoded, 0)
    notes: list[str] = []
    decoded_from = None
    final = True

    codings = [
        token.strip().lower()
        for value in header_values(headers, "content-encoding")
        for token in value.split(",")
    ]
    codings = ["gzip" if c == "x-gzip" else c for c in codings if c and c != "identity"]
    if codings:
        status, decoded, coding_notes = undo_encodings(data, codings, max_decoded)
        notes += coding_notes
        if status == "unsupported":
            # The bytes are still compressed, so only a hex view makes sense.
            lines, truncated = hex_dump(data, hex_cap)
            if truncated:
                notes.append(f"hex dump shows the first {size_label(hex_cap)}")
            return BodyView(kind="binary", note="; ".join(notes), hex_lines=lines)
        if status in ("decoded", "capped"):
            data = decoded
            decoded_from = ", ".join(codings)
            if status == "capped":
                notes.append(f"decoded view truncated at {size_label(max_decoded)}")
                final = False
        # Invalid data falls through with the raw bytes: a sender that set Content-Encoding
        # without compressing still gets a readable view.
    if decoded_from is None and len(data) > max_decoded:
        notes.append(
            f"body is {human_size(len(data))}; view truncated at {size_label(max_decoded)}"
        )
        data = data[:max_decoded]
        final = False

    content_type = next(iter(header_values(headers, "content-type")), None)
    view = _classify(data, content_type, final=final, cap=max_decoded, notes=notes)
    if view.kind == "binary":
        view.hex_lines, truncated = hex_dump(data, hex_cap)
        if truncated:
            notes.append(f"hex dump shows the first {size_label(hex_cap)}")
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
            data = as_bytes(body)
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
