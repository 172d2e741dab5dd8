"""A stored or passed-in body as the bytes it stands for."""

from __future__ import annotations

from typing import Any


def as_bytes(body: Any) -> bytes:
    """``body`` as ``bytes``: ``None`` is empty, ``str`` is encoded, bytes-likes are copied.

    Bodies are bytes everywhere; a ``str`` is encoded with ``surrogateescape`` so one decoded
    that way turns back into the bytes it came from instead of failing.
    """
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogateescape")
    return bytes(body)  # bytearray, memoryview
