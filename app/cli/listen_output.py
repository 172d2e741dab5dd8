"""The lines ``hookbin listen`` prints: one per forwarded request, safe for a terminal."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import click

from app.delivery.client import OutboundResult
from app.delivery.replay import suffix_of


def printable(text: str) -> str:
    """``text`` with control and other invisible characters escaped (it comes from strangers,
    and a raw ESC in a terminal is a command)."""
    out = []
    for char in text:
        if unicodedata.category(char)[0] in "CZ" and char != " ":
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def status_colour(status: int | None) -> str:
    """green for 2xx, yellow for 1xx, 3xx and 4xx, red for 5xx and for no answer at all."""
    if status is None or status >= 500:
        return "red"
    if 200 <= status < 300:
        return "green"
    return "yellow"


def request_head(when: datetime, item: Mapping[str, Any]) -> str:
    """``12:03:04  POST  /stripe/webhook?x=1``: when, and what was captured."""
    return f"{when:%H:%M:%S}  {printable(item['method'])}  {printable(suffix_of(dict(item)))}"


def format_line(when: datetime, item: Mapping[str, Any], result: OutboundResult) -> str:
    """``12:03:04  POST  /stripe/webhook?x=1  -> 200  12 ms``, the outcome coloured."""
    head = request_head(when, item)
    elapsed = f"{result.elapsed_ms:.0f} ms"
    if result.status is None:
        outcome = click.style(f"error: {printable(result.error or 'no answer')}", fg="red")
        return f"{head}  -> {outcome}  {elapsed}"
    line = f"{head}  -> {click.style(str(result.status), fg=status_colour(result.status))}"
    line += f"  {elapsed}"
    if result.error:  # an answer that was cut short
        line += "  " + click.style(f"({printable(result.error)})", fg="yellow")
    return line


def skipped_line(when: datetime, item: Mapping[str, Any]) -> str:
    """The line of a request deleted on the server before it could be forwarded."""
    return f"{request_head(when, item)}  -> " + click.style(
        "skipped: deleted on the server", fg="yellow"
    )
