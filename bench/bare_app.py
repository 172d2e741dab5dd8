"""A baseline for the capture benchmark: a bare Flask app with one catch-all route.

It reads the body and answers ``200 ok`` for any method on any path, and nothing else: no
database, no batching. Run it under exactly the gunicorn settings Hookbin uses::

    python -m gunicorn -c app/gunicorn_conf.py --bind 127.0.0.1:8001 --workers 2 bench.bare_app:app

(``app/gunicorn_conf.py`` selects the gevent worker, keep-alive, header limits and the hooks.)
"""

from __future__ import annotations

from flask import Flask, request

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]

app = Flask(__name__)


@app.route("/", defaults={"path": ""}, methods=ALL_METHODS, provide_automatic_options=False)
@app.route("/<path:path>", methods=ALL_METHODS, provide_automatic_options=False)
def catch_all(path: str) -> tuple[str, int]:
    """Read the whole body, answer 200."""
    request.get_data()
    return "ok", 200
