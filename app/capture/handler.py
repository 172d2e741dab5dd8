"""The capture path: a plain WSGI app in front of Flask for ``/h/<bin>/...``.

This is the hot path, so it skips Flask's routing, sessions and request parsing altogether: it
looks the bin up, reads the body with a hard cap, hands the capture to the commit batcher, and
answers only once the capture is durable. Nothing a sender controls reaches a header of ours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from http import HTTPStatus
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app.capture import wireheaders
from app.capture.body import BodyIncomplete, BodyTimeout, BodyTooLarge, read_body
from app.capture.delivery_ids import delivery_of
from app.config import Settings
from app.core import fastjson
from app.core.clock import utcnow
from app.delivery import via
from app.limits import senders
from app.limits.policy import Limits, Refusal, source_key
from app.rules import plan
from app.rules.hits import BinGone, RuleHits
from app.rules.limits import NO_BODY_STATUSES
from app.rules.match import Incoming
from app.signing import verdicts
from app.storage.batcher import CommitBatcher
from app.storage.captures import Capture, Stored
from app.storage.repository import Storage

log = logging.getLogger(__name__)

CAPTURE_PREFIX = "/h/"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_COMMON_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    # A capture URL is an API endpoint, never a page: nothing it answers may run in a browser.
    ("Content-Security-Policy", "sandbox; default-src 'none'"),
    # Browser-based senders may post here from any origin; capture answers carry no credentials.
    ("Access-Control-Allow-Origin", "*"),
]


def _answer(
    start_response: StartResponse,
    environ: dict[str, Any],
    status: str,
    payload: dict[str, Any],
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = fastjson.dumps(payload).encode() + b"\n"
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *_COMMON_HEADERS,
        *(extra or []),
    ]
    start_response(status, headers)
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]


def _retry_later(start_response: StartResponse, environ: dict[str, Any]) -> list[bytes]:
    """Nothing was stored: say so, and ask the sender to try again (senders do, on a 503)."""
    return _answer(
        start_response,
        environ,
        "503 Service Unavailable",
        {"error": "could not store the request; retry"},
        [("Retry-After", "1")],
    )


def _too_many(
    start_response: StartResponse, environ: dict[str, Any], refusal: Refusal
) -> list[bytes]:
    """Beyond a rate limit: nothing was read or stored; the sender may retry after the wait."""
    return _answer(
        start_response,
        environ,
        "429 Too Many Requests",
        {"error": refusal.error},
        [("Retry-After", str(refusal.retry_after))],
    )


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def _answer_planned(
    start_response: StartResponse,
    environ: dict[str, Any],
    planned: plan.Planned,
    request_id: str,
) -> list[bytes]:
    """Send a bin's configured answer (``app.rules.plan``) for a stored request.

    The bin's headers were checked when they were saved (no framing, cookie or CSP headers), and
    ``_COMMON_HEADERS`` still go out with every answer, so a configured answer stays inert.
    """
    if planned.delay:
        # The capture is committed already. Under gunicorn's gevent worker time.sleep is
        # cooperative, so the worker keeps answering other requests meanwhile.
        time.sleep(planned.delay)
    extra = [*planned.headers, ("X-Hookbin-Request-Id", request_id)]
    status = _status_line(planned.status)
    if planned.payload is not None:
        payload = {**planned.payload, "request_id": request_id}
        return _answer(start_response, environ, status, payload, extra)
    body = planned.body or b""
    headers = []
    if planned.status not in NO_BODY_STATUSES:
        if planned.content_type:
            headers.append(("Content-Type", planned.content_type))
        headers.append(("Content-Length", str(len(body))))
    elif planned.status == 205:
        # Unlike 204 and 304, a 205 is framed like any answer: it must say its body is empty.
        headers.append(("Content-Length", "0"))
    start_response(status, [*headers, *extra, *_COMMON_HEADERS])
    return [] if environ["REQUEST_METHOD"] == "HEAD" or not body else [body]


def split_capture_path(raw_path: str) -> tuple[str, str] | None:
    """``/h/<bin>/rest`` -> (bin id, "/rest"); the sub-path is "/" when there is none."""
    if not raw_path.startswith(CAPTURE_PREFIX):
        return None
    rest = raw_path[len(CAPTURE_PREFIX) :]
    bin_id, slash, sub = rest.partition("/")
    if not bin_id:
        return None
    return bin_id, "/" + sub if slash else "/"


def _raw_target(environ: dict[str, Any]) -> tuple[str, str]:
    # RAW_URI (gunicorn) / REQUEST_URI (werkzeug) keep the path exactly as sent, percent-escapes
    # and all; PATH_INFO has been decoded.
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        if "://" in raw.split("?", 1)[0]:  # absolute-form request target
            raw = "/" + raw.split("://", 1)[1].partition("/")[2]
        path, _, query = raw.partition("?")
        return path, query
    return environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")


def headers_from_environ(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """The best header list WSGI alone can give: merged repeats, order unknown, case lost."""
    out = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out.append((key[5:].replace("_", "-").title(), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            out.append((key.replace("_", "-").title(), value))
    return out


def make_capture_app(
    settings: Settings,
    storage: Storage,
    batcher: CommitBatcher[Capture, Stored | None],
    wake_delivery: Callable[[], None],
    limits: Limits | None = None,
) -> WSGIApp:
    """The WSGI app that captures every request below ``/h/<bin id>``.

    Captures are stored through ``batcher`` (group commit); ``wake_delivery`` tells this process's
    delivery loop that a capture queued a forward. ``limits`` are checked (and a bin's sender
    list) before the body is read, so a refused request costs no more than its headers.
    """
    limits = limits or Limits()
    rule_hits = RuleHits(storage)

    def capture(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        wire = wireheaders.take(environ)
        raw_path, query = _raw_target(environ)
        parts = split_capture_path(raw_path)
        if parts is None:
            return _answer(start_response, environ, "404 Not Found", {"error": "no such bin"})
        bin_id, sub_path = parts
        source = environ.get("REMOTE_ADDR")  # behind the trusted proxy hops (ProxyFix)
        if limits.source is not None:  # before the lookup: probing for bins counts too
            refusal = limits.source.hit(source_key(source))
            if refusal is not None:
                return _too_many(start_response, environ, refusal)
        try:
            bin_ = storage.cached_bin(bin_id)
        except SQLAlchemyError:  # the database is away: nothing can be stored, say so
            log.exception("could not look up bin %s", bin_id)
            return _retry_later(start_response, environ)
        if bin_ is None:
            return _answer(start_response, environ, "404 Not Found", {"error": "no such bin"})
        unlisted = senders.unlisted(bin_, source) if bin_.get("senders") else None
        if unlisted and bin_.get("senders_action") != "mark":
            return _answer(
                start_response,
                environ,
                "403 Forbidden",
                {"error": "this bin does not take requests from this address"},
            )
        if limits.bin is not None:
            refusal = limits.bin.hit(bin_id)
            if refusal is not None:
                return _too_many(start_response, environ, refusal)

        try:
            body = read_body(environ, settings.max_body_bytes, settings.body_timeout_seconds)
        except BodyTimeout:
            # The server closes the connection after this answer: the rest is never read.
            return _answer(
                start_response,
                environ,
                "408 Request Timeout",
                {"error": f"body not received within {settings.body_timeout_seconds:g} s"},
            )
        except BodyIncomplete:
            return _answer(
                start_response,
                environ,
                "400 Bad Request",
                {"error": "the body ended before it was complete; nothing was stored"},
            )
        except BodyTooLarge:
            return _answer(
                start_response,
                environ,
                "413 Content Too Large",
                {"error": f"body larger than {settings.max_body_bytes} bytes"},
            )
        except ValueError:
            return _answer(
                start_response, environ, "400 Bad Request", {"error": "bad Content-Length"}
            )

        headers = wire if wire is not None else headers_from_environ(environ)
        received_at = utcnow()
        signature = verdicts.check(
            bin_["signing"],
            method=environ["REQUEST_METHOD"],
            url=verdicts.called_url(
                public_url=settings.public_url,
                scheme=environ.get("wsgi.url_scheme", "http"),
                headers=headers,
                bin_id=bin_id,
                path=sub_path,
                query=query,
            ),
            headers=headers,
            body=body,
            received_at=received_at,
        )
        capture_row = Capture(
            bin_id=bin_id,
            method=environ["REQUEST_METHOD"],
            path=sub_path,
            query_string=query,
            headers=headers,
            header_source="wire" if wire is not None else "environ",
            content_type=environ.get("CONTENT_TYPE") or None,
            body=body,
            remote_addr=source,
            received_at=received_at,
            signature=signature,
            signing_rev=bin_["signing_rev"],
            delivery_id=delivery_of(headers, body).key,
            # Queued in the capture's own transaction (see ``app.delivery.queue``).
            # Never Hookbin's own forward come back: stored, not forwarded again.
            forward_url=(
                bin_["forward_url"]
                if bin_["auto_forward"] and not via.looped(headers, storage.deployment_id())
                else None
            ),
            sender_unlisted=unlisted,
        )
        planned = None
        responses = bin_.get("responses")
        if not responses:
            capture_row.answer_status = 200  # the standard acknowledgement, no extra work
        else:
            incoming = Incoming(
                method=capture_row.method,
                path=sub_path,
                query_string=query,
                headers=headers,
                body=body,
                content_type=capture_row.content_type,
            )
            try:
                # May bump a rule's shared counter: done before the capture is stored, so the
                # answer recorded with it is the one sent.
                planned = plan.plan(responses, incoming, count=partial(rule_hits.bump, bin_id))
            except BinGone:
                storage.forget_bin(bin_id)
                return _answer(start_response, environ, "404 Not Found", {"error": "no such bin"})
            except SQLAlchemyError:  # the rule counter: nothing was stored or acknowledged
                log.exception("could not count a response rule hit for bin %s", bin_id)
                return _retry_later(start_response, environ)
            except Exception:  # noqa: BLE001 - a bug in the rules must not cost the capture
                log.exception("response rules failed for a request to bin %s", bin_id)
                planned = plan.Planned(
                    status=500, payload={"error": "the bin's response rules failed on this request"}
                )
            capture_row.answer_status = planned.status
            capture_row.answer_rule = planned.rule

        try:
            stored = batcher.submit(capture_row)
        except Exception:  # noqa: BLE001 - tell the sender to retry; nothing was acknowledged
            log.exception("could not store a capture for bin %s", bin_id)
            return _retry_later(start_response, environ)
        if stored is None:
            storage.forget_bin(bin_id)
            return _answer(start_response, environ, "404 Not Found", {"error": "no such bin"})

        if capture_row.forward_url:
            wake_delivery()
        if planned is not None:
            return _answer_planned(start_response, environ, planned, stored.id)
        return _answer(
            start_response,
            environ,
            "200 OK",
            {"ok": True, "request_id": stored.id},
            [("X-Hookbin-Request-Id", stored.id)],
        )

    return capture


class CaptureDispatcher:
    """Send ``/h/...`` to the capture app and everything else to Flask."""

    def __init__(self, capture_app: WSGIApp, flask_app: WSGIApp) -> None:
        self.capture_app = capture_app
        self.flask_app = flask_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(CAPTURE_PREFIX):
            return self.capture_app(environ, start_response)
        return self.flask_app(environ, start_response)
