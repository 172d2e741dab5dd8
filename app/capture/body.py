"""Reading a capture's body: bounded in size, in time and in memory, and complete or not at all.

A sender controls how many bytes it sends and how fast. The body is read in small steps into a
spooled temporary file (in memory while small, on disk beyond that), so a large upload costs one
copy of itself in memory once it is complete rather than a growing list of chunks plus their
joined copy. A body that does not arrive in full within ``timeout`` seconds, or that ends before
its declared length, raises instead of being returned as if it were complete.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from app.core.blocking import gevent_patched

#: Bytes asked of the server per read. Small reads keep the server's own buffers small.
READ_CHUNK = 64 * 1024
#: Bodies up to this size stay in memory while they are read; larger ones go to a temporary file.
SPOOL_IN_MEMORY = 1024 * 1024


class BodyTooLarge(Exception):
    """The body is larger than HOOKBIN_MAX_BODY_BYTES."""


class BodyIncomplete(Exception):
    """The sender stopped (closed, half-closed, broke the chunked framing) before the end."""


class BodyTimeout(Exception):
    """The body did not arrive in full within HOOKBIN_BODY_TIMEOUT_SECONDS."""


def read_body(environ: dict[str, Any], limit: int, timeout: float) -> bytes:
    """The request body, exactly as declared, or an exception saying why not.

    Raises ``BodyTooLarge`` (without reading it all) beyond ``limit`` bytes, ``ValueError`` for a
    malformed Content-Length, ``BodyIncomplete`` when the body ends early, and ``BodyTimeout``
    when it takes longer than ``timeout`` seconds (0: no limit).
    """
    stream = environ["wsgi.input"]
    length_header = environ.get("CONTENT_LENGTH") or ""
    length: int | None = None
    if length_header.strip():
        length = int(length_header)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > limit:
            raise BodyTooLarge
        if length == 0:
            return b""
    else:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked and not environ.get("wsgi.input_terminated"):
            return b""
    with _deadline(timeout) as expired:
        return _read(stream, length, limit, expired)


def _read(stream: Any, length: int | None, limit: int, expired: Any) -> bytes:
    first = _chunk(stream, READ_CHUNK if length is None else min(READ_CHUNK, length), expired)
    if len(first) > limit:
        raise BodyTooLarge
    if length is not None and len(first) == length:
        return first  # the common case: a small body, read at once and not copied
    if not first:
        if length is not None:
            raise BodyIncomplete
        return b""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        spool.write(first)
        size = len(first)
        while length is None or size < length:
            want = READ_CHUNK if length is None else min(READ_CHUNK, length - size)
            chunk = _chunk(stream, want, expired)
            if not chunk:
                if length is not None:
                    raise BodyIncomplete
                break
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            spool.write(chunk)
        spool.seek(0)
        # One allocation of the final size; the chunks are on disk (or in one buffer) meanwhile.
        return spool.read()


def _chunk(stream: Any, size: int, expired: Any) -> bytes:
    if expired():
        raise BodyTimeout
    try:
        return stream.read(size)
    except BodyTimeout:
        raise
    except Exception as exc:  # noqa: BLE001 - the server's reader: a cut or malformed body
        raise BodyIncomplete from exc


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[Any]:
    """Bound the reads inside the block to ``seconds`` in all; yields a "time is up" check.

    Under gevent a read that waits for a trickling sender is interrupted when the time is up
    (``BodyTimeout`` is an ``Exception``, so the server also learns that the connection's
    framing is lost and closes it). Elsewhere the time is checked between reads.
    """
    if seconds <= 0:
        yield lambda: False
        return
    ends = time.monotonic() + seconds

    def expired() -> bool:
        return time.monotonic() >= ends

    if not gevent_patched():
        yield expired
        return
    import gevent

    with gevent.Timeout(seconds, BodyTimeout()):
        yield expired
