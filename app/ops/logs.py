"""Log lines as JSON objects, one per line (``HOOKBIN_LOG_FORMAT=json``).

Each line has ``time``, ``level``, ``logger`` and ``message``, plus ``bin_id`` and
``request_id`` where the line is about one: from the record's ``extra``, from ``bind`` (the
capture path, auto-forward tries), or from the URL of the Flask view being served. gunicorn's
own error (and access) log gets the same format (``app.ops.gunicorn_logging``).

In the default ``text`` format logging is left as it always was.

The gunicorn master imports this module (for its own log format), so it imports nothing beyond
the standard library at the top.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from app.core.blocking import gevent_patched

FORMATS = ("text", "json")
_FIELDS = ("bin_id", "request_id")

_bound: ContextVar[dict[str, str] | None] = ContextVar("hookbin_log_fields", default=None)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def check_format(log_format: str) -> str:
    """``log_format`` lower-cased; ValueError unless it is ``text`` or ``json``."""
    lowered = log_format.strip().lower()
    if lowered not in FORMATS:
        raise ValueError(f"HOOKBIN_LOG_FORMAT must be text or json, not {log_format!r}")
    return lowered


@contextlib.contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    """Add ``bin_id``/``request_id`` to every line logged by this thread (greenlet) meanwhile."""
    merged = {**(_bound.get() or {}), **{k: v for k, v in fields.items() if v}}
    token = _bound.set(merged)
    try:
        yield
    finally:
        _bound.reset(token)


def tag_captures(app: WSGIApp) -> WSGIApp:
    """Wrap the capture WSGI app so lines logged while capturing name the bin."""
    from app.capture.handler import split_capture_path

    def tagged(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        parts = split_capture_path(environ.get("PATH_INFO", ""))
        token = _bound.set({"bin_id": parts[0]} if parts else None)
        try:
            return app(environ, start_response)
        finally:
            _bound.reset(token)

    return tagged


def _known_fields(record: logging.LogRecord) -> dict[str, str]:
    found = {k: str(getattr(record, k)) for k in _FIELDS if getattr(record, k, None)}
    for key, value in (_bound.get() or {}).items():
        found.setdefault(key, value)
    from flask import has_request_context, request

    if has_request_context():
        for key, value in (request.view_args or {}).items():
            if key in _FIELDS and value:
                found.setdefault(key, str(value))
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object (exceptions and stacks as one escaped string)."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        line.update(_known_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def _has_json_handler(logger: logging.Logger) -> bool:
    return any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers)


def _log_hub_error(_hub: Any, context: Any, t: Any, v: Any, tb: Any) -> None:
    """gevent's report of an error no caller took (or a native thread's), as a log line."""
    where = context if isinstance(context, str) else repr(context)
    exc_info = (t, v, tb) if isinstance(v, BaseException) else None
    logging.getLogger("gevent").error(
        "%s failed with %s", where[:300], getattr(t, "__name__", t), exc_info=exc_info
    )


def configure(log_format: str) -> None:
    """Set up this process's logging for ``log_format`` (idempotent; text changes nothing)."""
    if check_format(log_format) != "json":
        return
    logging.getLogger("app").setLevel(logging.INFO)
    if gevent_patched():
        from gevent.hub import Hub

        # gevent writes such errors to stderr itself, a traceback over many lines.
        Hub.print_exception = _log_hub_error  # type: ignore[method-assign,assignment]
    root = logging.getLogger()
    if _has_json_handler(root):  # done already in this process (the gunicorn master, then fork)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    # Libraries stay at WARNING, as with the text format: httpx, for one, logs every URL it
    # requests at INFO, and forward targets may carry secrets in theirs.
    root.setLevel(logging.WARNING)
