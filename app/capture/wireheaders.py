"""Keep the header list exactly as it came off the wire under gunicorn.

WSGI folds headers into ``HTTP_*`` environ keys: names are upper-cased, dashes become underscores,
and a header sent twice is merged with a comma. gunicorn itself still holds the real list (order
and repeats) on its request object, only upper-cased. This module

* teaches gunicorn's parser to remember each header name's original spelling, and
* hands the list from gunicorn's ``pre_request`` hook to the capture app in the same thread (or
  greenlet): gunicorn calls the hook and then the WSGI app for that request, one after the other.

Under any other WSGI server ``take`` returns None and the capture path falls back to the environ,
marking the request's ``header_source`` as ``"environ"``.
"""

from __future__ import annotations

import threading
from typing import Any

_local = threading.local()


def _names_as_sent(data: bytes) -> list[str]:
    names = []
    for line in data.split(b"\r\n"):
        if not line or line[:1] in (b" ", b"\t") or b":" not in line:
            continue
        names.append(line.split(b":", 1)[0].rstrip(b" \t").decode("latin-1"))
    return names


def _case_keeping_request_class() -> type:
    from gunicorn.http.message import Request

    class CaseKeepingRequest(Request):  # type: ignore[misc]
        """gunicorn's Request, plus ``wire_headers``: the parsed headers with original names."""

        wire_headers: list[tuple[str, str]] | None = None

        def parse_headers(self, data: bytes, from_trailer: bool = False) -> list[tuple[str, str]]:
            headers: list[tuple[str, str]] = super().parse_headers(data, from_trailer)
            if not from_trailer:
                self.wire_headers = _restore_case(headers, _names_as_sent(data))
            return headers

    return CaseKeepingRequest


def _restore_case(headers: list[tuple[str, str]], sent: list[str]) -> list[tuple[str, str]]:
    # gunicorn may drop a header (e.g. its header_map policy); walk both lists so that each parsed
    # header gets the spelling of the next sent name that matches it.
    out = []
    i = 0
    for name, value in headers:
        j = i
        while j < len(sent) and sent[j].upper() != name:
            j += 1
        if j < len(sent):
            out.append((sent[j], value))
            i = j + 1
        else:
            out.append((name, value))
    return out


def install() -> None:
    """Make gunicorn's request parser keep header-name spelling (call in the gunicorn config)."""
    from gunicorn.http import parser

    if not hasattr(parser.RequestParser.mesg_class, "wire_headers"):
        parser.RequestParser.mesg_class = _case_keeping_request_class()


def pre_request(_worker: Any, req: Any) -> None:
    """gunicorn hook: remember this request's header list for the capture app."""
    headers = getattr(req, "wire_headers", None)
    if headers is None:
        headers = list(req.headers)
    _local.current = (req.method, req.uri, headers)


def take(environ: dict[str, Any]) -> list[tuple[str, str]] | None:
    """The wire header list for the request in ``environ``, or None when it is not known."""
    current = getattr(_local, "current", None)
    _local.current = None
    if current is None:
        return None
    method, uri, headers = current
    if method != environ.get("REQUEST_METHOD") or uri != environ.get("RAW_URI"):
        return None
    return list(headers)
