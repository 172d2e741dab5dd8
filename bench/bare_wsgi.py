"""The lower baseline for the capture benchmark: a plain WSGI callable, no framework.

It reads the body and answers ``200 ok`` for any method on any path. Beside the bare Flask route
(``bench/bare_app.py``) it shows what gunicorn's gevent worker alone costs, so a reader sees both
ceilings. It runs under exactly the gunicorn settings Hookbin uses::

    python -m gunicorn -c app/gunicorn_conf.py --bind 127.0.0.1:8001 --workers 2 bench.bare_wsgi:app
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

_BODY = b"ok"
_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(_BODY)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Read the whole body, answer 200."""
    environ["wsgi.input"].read()
    start_response("200 OK", _HEADERS)
    return [_BODY]
