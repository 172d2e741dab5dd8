"""The JSON API under ``/api`` (documented in ``docs/openapi.yaml``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, current_app, jsonify, request, send_file
from werkzeug.exceptions import HTTPException

from app.access import keys
from app.bins import names, paging
from app.bins import settings as bin_settings
from app.config import PROJECT_ROOT
from app.core.clock import utcnow
from app.core.invalid import Invalid
from app.delivery.edit import EditError, outgoing_from_api
from app.delivery.queue import DELIVERED, retry_now, state_of
from app.delivery.replay import TargetRefused, replay
from app.delivery.reports import parse_listen_report
from app.limits.policy import source_key
from app.web import auth
from app.web.auth import Grant, bin_or_404, request_or_404
from app.web.lookup import services, storage, verdicts_of
from app.web.serialize import public_attempt, public_bin, public_forward, public_request
from app.web.urls import view_url

bp = Blueprint("api", __name__, url_prefix="/api")


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


_HTTP_ERRORS = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
    500: "internal server error",
}


@bp.app_errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response | HTTPException:
    """Every error under /api is JSON, including those of requests that matched no route."""
    if not request.path.startswith("/api/"):
        return exc
    if exc.response is not None:  # already answered in JSON by whoever aborted
        return exc.response
    status = exc.code or 500
    message = _HTTP_ERRORS.get(status) or (exc.description or exc.name).rstrip(".")
    response = jsonify({"error": message})
    response.status_code = status
    for name, value in exc.get_headers():  # 405's Allow header, for one
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _invalid(exc: Invalid) -> tuple[Response, int]:
    return _error(exc.status, str(exc))


def _request_json(*, force: bool = False) -> Any:
    """The body parsed as JSON, or None when it is not JSON (nesting too deep included)."""
    try:
        return request.get_json(silent=True, force=force)
    except RecursionError:  # json.loads of "[[[[..." is not a ValueError
        return None


def _json_body() -> dict[str, Any]:
    data = _request_json()
    if not isinstance(data, dict):
        response = jsonify({"error": "expected a JSON object body"})
        response.status_code = 400
        abort(response)
    return data


@bp.get("/bins")
def list_bins() -> Response | tuple[Response, int]:
    """Every bin, for operators: newest first, ``limit`` per page, ``before`` a bin id."""
    if not auth.operator():
        auth.refuse(Grant.NONE, Grant.MANAGE, json=True)
    try:
        limit = paging.page_limit(request.args.get("limit"), services().settings.page_size)
    except Invalid as exc:
        return _invalid(exc)
    before = request.args.get("before") or None
    found = storage().list_bins(limit=limit, before=before)
    next_cursor = found[-1]["id"] if len(found) == limit else None
    return jsonify({"items": [public_bin(b) for b in found], "next": next_cursor})


@bp.post("/bins")
def create_bin() -> tuple[Response, int]:
    """Create a bin: named when the body says ``{"name": ...}``, else with a random id.

    The answer carries the bin's API ``token``, shown this once, and its view link.
    """
    if services().settings.create_bins == "token" and not auth.operator():
        response, status = _error(401, "creating bins on this server needs an operator token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="hookbin"'
        return response, status
    # Operators are not held to the creation limit: it guards against strangers.
    refused = None if auth.operator() else creation_refused()
    if refused is not None:
        return refused
    name = None
    if request.get_data():  # the body is optional: no body, a random id as always
        data = _request_json(force=True)
        if not isinstance(data, dict):
            return _error(400, "expected a JSON object body (or no body)")
        try:
            name = bin_settings.check_name(data.get("name"))
        except Invalid as exc:
            return _invalid(exc)
    token = keys.new_token()
    try:
        created = names.create_bin(
            storage(),
            name,
            current_app.url_map,
            token_hash=keys.digest(token),
            page_key_salt=keys.new_salt(),
        )
    except names.NameRefused as exc:
        return _error(exc.status, str(exc))
    shown = public_bin(created, auth.page_key_of(created))
    return jsonify({**shown, "token": token}), 201


def creation_refused() -> tuple[Response, int] | None:
    """Count an attempt to make a bin against HOOKBIN_CREATE_RATE_LIMIT; the 429 answer (JSON,
    with ``Retry-After``) when it is beyond the limit, else None."""
    limit = services().limits.create
    refusal = None if limit is None else limit.hit(source_key(request.remote_addr))
    if refusal is None:
        return None
    response, status = _error(429, refusal.error)
    response.headers["Retry-After"] = str(refusal.retry_after)
    return response, status


@bp.get("/bins/<bin_id>")
def get_bin(bin_id: str) -> Response:
    """One bin."""
    bin_ = bin_or_404(bin_id, Grant.READ)
    page_key = auth.page_key_of(bin_) if auth.grant_of(bin_) is Grant.MANAGE else None
    return jsonify(public_bin(bin_, page_key))


@bp.patch("/bins/<bin_id>")
def patch_bin(bin_id: str) -> Response | tuple[Response, int]:
    """Change a bin's forward target, auto-forward switch, signing secrets and responses."""
    bin_ = bin_or_404(bin_id, Grant.MANAGE)
    try:
        # Saving responses (even unchanged) starts the bin's rule counters over.
        changes = bin_settings.changes_from_json(_json_body(), bin_)
    except Invalid as exc:
        return _invalid(exc)
    updated = storage().update_bin(bin_id, **changes) or {}
    return jsonify(public_bin(updated, auth.page_key_of(updated)))


@bp.delete("/bins/<bin_id>")
def delete_bin(bin_id: str) -> tuple[str, int]:
    """Delete a bin and everything in it."""
    bin_or_404(bin_id, Grant.MANAGE)
    if not storage().delete_bin(bin_id):
        abort(404)
    return "", 204


@bp.post("/bins/<bin_id>/token")
def new_token(bin_id: str) -> Response:
    """A new API token for the bin, shown this once; the old one stops working."""
    bin_or_404(bin_id, Grant.MANAGE)
    token = keys.new_token()
    storage().update_bin(bin_id, token_hash=keys.digest(token))
    return jsonify({"token": token})


@bp.post("/bins/<bin_id>/view-link")
def new_view_link(bin_id: str) -> Response:
    """A new view link for the bin; every older one stops working."""
    bin_or_404(bin_id, Grant.MANAGE)
    updated = storage().update_bin(bin_id, page_key_salt=keys.new_salt()) or {}
    return jsonify(public_bin(updated, auth.page_key_of(updated)))


@bp.get("/bins/<bin_id>/shares")
def list_shares(bin_id: str) -> Response:
    """The bin's read-only share links (their keys are never shown again)."""
    bin_or_404(bin_id, Grant.MANAGE)
    return jsonify({"items": storage().list_shares(bin_id)})


@bp.post("/bins/<bin_id>/shares")
def new_share(bin_id: str) -> tuple[Response, int]:
    """A read-only share link of the bin: its ``key`` and ``url`` are shown this once."""
    bin_or_404(bin_id, Grant.MANAGE)
    data = _request_json() if request.get_data() else {}
    if not isinstance(data, dict):
        return _error(400, "expected a JSON object body (or no body)")
    label = data.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > 100):
        return _error(400, "label must be a string of at most 100 characters, or null")
    share_key = keys.new_share_key()
    share = storage().add_share(bin_id, keys.new_salt(), keys.digest(share_key), label or None)
    url = view_url(bin_id) + "?" + urlencode({"share": share_key})
    return jsonify({**share, "key": share_key, "url": url}), 201


@bp.delete("/bins/<bin_id>/shares/<share_id>")
def revoke_share(bin_id: str, share_id: str) -> tuple[str, int]:
    """Revoke a share link: whoever holds it loses the bin at once."""
    bin_or_404(bin_id, Grant.MANAGE)
    if not storage().revoke_share(bin_id, share_id):
        abort(404)
    return "", 204


@bp.delete("/bins/<bin_id>/requests")
def clear_bin(bin_id: str) -> Response:
    """Delete every request of a bin."""
    bin_or_404(bin_id, Grant.MANAGE)
    return jsonify({"deleted": storage().clear_bin(bin_id)})


@bp.get("/bins/<bin_id>/requests")
def list_requests(bin_id: str) -> Response | tuple[Response, int]:
    """A page of a bin's requests, newest first."""
    bin_ = bin_or_404(bin_id, Grant.READ)
    try:
        limit = paging.page_limit(request.args.get("limit"), services().settings.page_size)
        before_seq = paging.cursor(request.args.get("before"))
    except Invalid as exc:
        return _invalid(exc)
    items = storage().list_requests(bin_id, limit=limit, before_seq=before_seq)
    verdicts_of(bin_, items)
    next_cursor = items[-1]["id"] if len(items) == limit else None
    return jsonify({"items": [public_request(i) for i in items], "next": next_cursor})


@bp.get("/requests/<request_id>")
def get_request(request_id: str) -> Response:
    """One captured request (without its body)."""
    item = request_or_404(request_id, Grant.READ)
    verdicts_of(bin_or_404(item["bin_id"], Grant.READ), [item])
    return jsonify(public_request(item))


@bp.delete("/requests/<request_id>")
def delete_request(request_id: str) -> tuple[str, int]:
    """Delete one captured request."""
    request_or_404(request_id, Grant.MANAGE)
    if not storage().delete_request(request_id):
        abort(404)
    return "", 204


@bp.get("/requests/<request_id>/body")
def get_body(request_id: str) -> Response:
    """The exact bytes captured, as a download that no browser will render."""
    import io

    item = request_or_404(request_id, Grant.READ)
    data = storage().get_body(item["seq"])
    response = send_file(
        io.BytesIO(data),
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=f"request-{request_id}.bin",
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/requests/<request_id>/attempts")
def list_attempts(request_id: str) -> Response:
    """Every replay/forward attempt of a request, newest first."""
    item = request_or_404(request_id, Grant.READ)
    attempts = storage().list_attempts(item["seq"])
    return jsonify({"items": [public_attempt(a) for a in attempts]})


@bp.post("/requests/<request_id>/replay")
def replay_request(request_id: str) -> tuple[Response, int]:
    """Replay a request to ``url`` (default: the bin's forward URL)."""
    item = request_or_404(request_id, Grant.MANAGE)
    data = _request_json() or {}
    if not isinstance(data, dict):
        return _error(400, "expected a JSON object body")
    current = services()
    try:
        url = bin_settings.check_target_url(data.get("url") or None)
    except Invalid as exc:
        return _invalid(exc)
    if url is None:
        url = (current.storage.get_bin(item["bin_id"]) or {}).get("forward_url")
    if not url:
        return _error(400, "give a target url (or set the bin's forward_url)")
    try:
        # Edit fields (method, path, query, headers, body, body_base64, resign) are optional.
        outgoing = outgoing_from_api(current.storage, current.settings, item, data, url)
        attempt = replay(
            current.storage,
            current.settings,
            item,
            url,
            request_host=request.host,
            outgoing=outgoing,
        )
    except EditError as exc:
        return _error(400, str(exc))
    except TargetRefused as exc:
        return _error(422, str(exc))
    payload = public_attempt(attempt)
    if attempt["status"] is None:
        return jsonify({**payload, "error": attempt["error"]}), 502
    return jsonify(payload), 200


@bp.get("/requests/<request_id>/forward")
def forward_state(request_id: str) -> Response | tuple[Response, int]:
    """Where the auto-forward of a request stands (404 when it was never queued)."""
    item = request_or_404(request_id, Grant.READ)
    current = services()
    state = current.storage.read(state_of, item["seq"])
    if state is None:
        return _error(404, "this request was not queued for auto-forward")
    return jsonify(public_forward(state, current.delivery.max_tries))


@bp.post("/requests/<request_id>/forward/retry")
def retry_forward(request_id: str) -> tuple[Response, int]:
    """Try the auto-forward of a request now: skip the wait, or re-open one given up on."""
    item = request_or_404(request_id, Grant.MANAGE)
    current = services()
    state = current.storage.write(retry_now, item["seq"])
    if state is None:
        return _error(404, "this request was not queued for auto-forward")
    if state["state"] == DELIVERED:
        return _error(409, "already delivered; replay the request to send it again")
    current.delivery.wake()
    return jsonify(public_forward(state, current.delivery.max_tries)), 202


@bp.get("/openapi.yaml")
def openapi() -> Response:
    """The OpenAPI description of this API."""
    text = (PROJECT_ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8")
    return Response(text, mimetype="application/yaml")


@bp.post("/requests/<request_id>/attempts")
def report_attempt(request_id: str) -> tuple[Response, int]:
    """Store the outcome of a delivery made elsewhere (``hookbin listen`` on a laptop)."""
    item = request_or_404(request_id, Grant.MANAGE)
    try:
        report = parse_listen_report(_json_body())
    except Invalid as exc:
        return _invalid(exc)
    body = report.body
    cap = services().settings.replay_max_response_bytes
    attempt = storage().add_attempt(
        item["seq"],
        "listen",
        method=report.method,
        url=report.url,
        started_at=utcnow(),
        status=report.status,
        response_headers=report.headers,
        response_body=body[:cap],
        response_size=len(body),
        truncated=report.truncated or len(body) > cap,
        elapsed_ms=report.elapsed_ms,
        error=report.error,
    )
    return jsonify(public_attempt(attempt)), 201
