"""Compare two requests (or a request and what a replay of it sent), side by side.

Plain data for a template, nothing rendered here: every string is captured from a stranger and
the template autoescapes it. Three sections are compared line by line with ``difflib``: the
request line, the headers (one ``Name: value`` per line, in order) and the body. JSON bodies are
pretty-printed first (keys in the order sent, one per line) so that a changed key or value is one
changed line rather than a different blob; form bodies become one field per line. Binary bodies
are compared as hex dumps while small, and otherwise only said to differ, with their sizes.

Long runs of equal lines are folded down to a little context, and the input is capped, so that
a diff of two large bodies stays quick to compute and to render.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.inspect.bodyview import build_view
from app.inspect.display import hex_dump, human_size

__all__ = ["Cell", "Comparison", "Row", "Section", "Side", "body_lines", "compare", "diff_lines"]

#: Lines compared per side; beyond this the rest is cut (with a note).
MAX_LINES = 5000
#: Characters kept per line; longer lines are cut (with a note).
MAX_LINE_CHARS = 2000
#: Bytes of a body decoded for the comparison.
MAX_BODY_BYTES = 1 << 20
#: Binary bodies up to this size are compared as hex dumps.
MAX_HEX_BYTES = 16 * 1024
#: Within a changed pair of lines, the changed characters are marked when both are this short.
MAX_INTRALINE_CHARS = 500
#: Character comparisons (``len(old) * len(new)`` per pair) spent marking changed characters in
#: one diff; past it, changed lines are marked as a whole, so a diff of many long changed lines
#: stays quick.
MAX_INTRALINE_WORK = 4_000_000
#: Below this similarity (0..1) a changed pair of lines is marked as a whole.
MIN_INTRALINE_RATIO = 0.5
#: Equal lines shown around each change; longer equal runs are folded.
CONTEXT = 3


@dataclass(frozen=True)
class Side:
    """One of the two things compared: a captured request, or what a replay sent."""

    label: str
    method: str
    target: str  # sub-path plus query, e.g. "/hook?x=1"
    headers: Sequence[tuple[str, str]]
    body: bytes


@dataclass
class Cell:
    """One side of a row: its line number and its text in pieces, ``(text, changed)``."""

    number: int
    pieces: list[tuple[str, bool]]

    @property
    def text(self) -> str:
        """The whole line."""
        return "".join(text for text, _ in self.pieces)


@dataclass
class Row:
    """One row of a side-by-side diff.

    ``kind``: ``equal``, ``changed`` (both sides, different), ``removed`` (left only),
    ``added`` (right only) or ``skip`` (``skipped`` equal lines folded away).
    """

    kind: str
    left: Cell | None = None
    right: Cell | None = None
    skipped: int = 0


@dataclass
class Section:
    """A compared part of the request: its rows, whether both sides are equal, and notes."""

    title: str
    rows: list[Row]
    same: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    """The whole comparison of ``left`` and ``right``."""

    left: Side
    right: Side
    sections: list[Section]

    @property
    def same(self) -> bool:
        """True when nothing differs in any section."""
        return all(section.same for section in self.sections)


# --- line diff ------------------------------------------------------------------------------------


def _pieces(old: str, new: str) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """Both lines split into unchanged and changed runs of characters."""
    if len(old) > MAX_INTRALINE_CHARS or len(new) > MAX_INTRALINE_CHARS:
        return [(old, True)], [(new, True)]
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    if matcher.ratio() < MIN_INTRALINE_RATIO:
        # Mostly different: scattered one-letter matches would only be noise.
        return [(old, True)], [(new, True)]
    left: list[tuple[str, bool]] = []
    right: list[tuple[str, bool]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        changed = tag != "equal"
        if i2 > i1:
            left.append((old[i1:i2], changed))
        if j2 > j1:
            right.append((new[j1:j2], changed))
    return _merge(left), _merge(right)


def _merge(pieces: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Join neighbouring pieces, folding equal islands of one or two characters into a change."""
    marked = [
        (text, changed or (0 < i < len(pieces) - 1 and len(text) < 3))
        for i, (text, changed) in enumerate(pieces)
    ]
    out: list[tuple[str, bool]] = []
    for text, changed in marked:
        if out and out[-1][1] == changed:
            out[-1] = (out[-1][0] + text, changed)
        else:
            out.append((text, changed))
    return out


def _fold(rows: list[Row], context: int) -> list[Row]:
    """Replace runs of equal rows longer than twice ``context`` by one ``skip`` row."""
    out: list[Row] = []
    start = 0
    while start < len(rows):
        if rows[start].kind != "equal":
            out.append(rows[start])
            start += 1
            continue
        end = start
        while end < len(rows) and rows[end].kind == "equal":
            end += 1
        head = context if start > 0 else 0  # context after the change before this run
        tail = context if end < len(rows) else 0  # context before the change after it
        if end - start > head + tail + 1:
            out += rows[start : start + head]
            out.append(Row("skip", skipped=end - start - head - tail))
            out += rows[end - tail : end]
        else:
            out += rows[start:end]
        start = end
    return out


def diff_lines(
    left: Sequence[str], right: Sequence[str], *, context: int | None = CONTEXT
) -> list[Row]:
    """Side-by-side rows for two lists of lines; ``context=None`` keeps every equal line.

    Replaced blocks are paired line by line (with the changed characters marked); what is left
    over on either side is ``removed`` or ``added``.
    """
    rows: list[Row] = []
    budget = MAX_INTRALINE_WORK
    matcher = difflib.SequenceMatcher(None, left, right)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for k in range(i2 - i1):
                line = left[i1 + k]
                rows.append(
                    Row(
                        "equal",
                        Cell(i1 + k + 1, [(line, False)]),
                        Cell(j1 + k + 1, [(line, False)]),
                    )
                )
            continue
        paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        for k in range(paired):
            old_line, new_line = left[i1 + k], right[j1 + k]
            if max(len(old_line), len(new_line)) <= MAX_INTRALINE_CHARS:  # else no work done
                budget -= len(old_line) * len(new_line)
            if budget >= 0:
                old, new = _pieces(old_line, new_line)
            else:
                old, new = [(old_line, True)], [(new_line, True)]
            rows.append(Row("changed", Cell(i1 + k + 1, old), Cell(j1 + k + 1, new)))
        for i in range(i1 + paired, i2):
            rows.append(Row("removed", left=Cell(i + 1, [(left[i], True)])))
        for j in range(j1 + paired, j2):
            rows.append(Row("added", right=Cell(j + 1, [(right[j], True)])))
    return rows if context is None else _fold(rows, context)


# --- preparing each part ----------------------------------------------------------------------


def _capped(lines: list[str], notes: list[str], what: str) -> list[str]:
    """``lines`` cut to the limits, with a note when anything was cut."""
    if len(lines) > MAX_LINES:
        notes.append(f"{what}: only the first {MAX_LINES} lines are compared")
        lines = lines[:MAX_LINES]
    if any(len(line) > MAX_LINE_CHARS for line in lines):
        notes.append(f"{what}: lines longer than {MAX_LINE_CHARS} characters are cut")
        lines = [
            line[:MAX_LINE_CHARS] + "…" if len(line) > MAX_LINE_CHARS else line for line in lines
        ]
    return lines


def _split(text: str) -> list[str]:
    # CRLF and LF read the same here; a difference in line endings gets a note instead.
    return text.replace("\r\n", "\n").split("\n")


def _visible(value: str) -> str:
    # A form value may hold line breaks; one field must stay one line.
    return value.replace("\r", "\\r").replace("\n", "\\n")


def body_lines(body: bytes, headers: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """How a body is compared: ``(mode, lines)``.

    mode: ``empty``, ``json`` (pretty-printed), ``form`` (``name=value`` per field, decoded),
    ``text`` or ``binary`` (no lines). Content-Encoding (gzip, deflate) is undone first, as in
    the request view.
    """
    if not body:
        return "empty", []
    view = build_view(body, list(headers), max_decoded=MAX_BODY_BYTES)
    if view.kind == "json" and view.pretty is not None:
        return "json", view.pretty.split("\n")
    if view.kind == "form" and view.fields is not None:
        return "form", [f"{_visible(name)}={_visible(value)}" for name, value in view.fields]
    if view.kind == "text" and view.text is not None:
        return "text", _split(view.text)
    if view.kind == "binary":
        return "binary", []
    # Multipart (and anything else with a structured view): compare the text itself.
    return _raw_text(body)


def _raw_text(body: bytes) -> tuple[str, list[str]]:
    """The body as UTF-8 text lines, or binary."""
    if not body:
        return "empty", []
    view = build_view(body, [("Content-Type", "application/octet-stream")])
    if view.kind == "text" and view.text is not None:
        return "text", _split(view.text)
    return "binary", []


def _line_endings(body: bytes) -> str:
    return "CRLF" if b"\r\n" in body else "LF"


def _body_section(left: Side, right: Side) -> Section:
    notes: list[str] = []
    if not left.body and not right.body:
        return Section("Body", [], True, ["both bodies are empty"])
    left_mode, left_lines = body_lines(left.body, left.headers)
    right_mode, right_lines = body_lines(right.body, right.headers)
    modes = {left_mode, right_mode} - {"empty"}
    if len(modes) > 1 and "binary" not in modes:
        # One side JSON (or form) and the other not, e.g. an edit that broke the JSON: compare
        # the plain text of both rather than a pretty print with a raw one.
        left_mode, left_lines = _raw_text(left.body)
        right_mode, right_lines = _raw_text(right.body)
        modes = {left_mode, right_mode} - {"empty"}
        notes.append("the bodies are not both JSON (or both forms); compared as text")
    if "binary" in modes:
        return _binary_section(left.body, right.body, notes)
    if "json" in modes:
        notes.append("JSON pretty-printed before comparing (keys in the order sent)")
    if "form" in modes:
        notes.append("form fields compared one per line, decoded")
    if (
        "text" in modes
        and left.body
        and right.body
        and _line_endings(left.body) != _line_endings(right.body)
    ):
        notes.append(
            f"line endings differ ({_line_endings(left.body)} vs {_line_endings(right.body)})"
        )
    left_lines = _capped(left_lines, notes, "left body")
    right_lines = _capped(right_lines, notes, "right body")
    rows = diff_lines(left_lines, right_lines)
    same = left.body == right.body
    if not same and all(row.kind in ("equal", "skip") for row in rows):
        notes.append(
            f"the bytes differ ({len(left.body)} vs {len(right.body)} bytes) "
            "but read the same once decoded"
        )
    return Section("Body", rows, same, notes)


def _binary_section(left: bytes, right: bytes, notes: list[str]) -> Section:
    sizes = f"{human_size(len(left))} vs {human_size(len(right))}"
    if left == right:
        notes.append(f"binary bodies are identical ({human_size(len(left))})")
        return Section("Body", [], True, notes)
    if len(left) <= MAX_HEX_BYTES and len(right) <= MAX_HEX_BYTES:
        notes.append(f"binary bodies differ ({sizes}); hex dumps compared")
        rows = diff_lines(hex_dump(left, MAX_HEX_BYTES)[0], hex_dump(right, MAX_HEX_BYTES)[0])
        return Section("Body", rows, False, notes)
    notes.append(f"binary bodies differ ({sizes}, {len(left)} vs {len(right)} bytes)")
    return Section("Body", [], False, notes)


def compare(left: Side, right: Side) -> Comparison:
    """Compare two requests: request line, headers and body."""
    request_line = diff_lines(
        [f"{left.method} {left.target}"], [f"{right.method} {right.target}"], context=None
    )
    left_headers = [f"{name}: {value}" for name, value in left.headers]
    right_headers = [f"{name}: {value}" for name, value in right.headers]
    notes: list[str] = []
    header_rows = diff_lines(
        _capped(left_headers, notes, "left headers"),
        _capped(right_headers, notes, "right headers"),
        context=None,
    )
    return Comparison(
        left,
        right,
        [
            Section(
                "Request line",
                request_line,
                (left.method, left.target) == (right.method, right.target),
            ),
            Section("Headers", header_rows, list(left.headers) == list(right.headers), notes),
            _body_section(left, right),
        ],
    )
