"""The JSON API under ``/api`` (documented in ``docs/openapi.yaml``)."""

from __future__ import annotations

import base64
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request, send_file
from werkzeug.exceptions import HTTPException

from app.bins import names, paging
from app.bins import settings as bin_settings
from app.config import PROJECT_ROOT
from app.core.invalid import Invalid
from app.delivery.edit import EditError, outgoing_from_api
from app.delivery.queue import DELIVERED, describe, retry_now, state_of
from app.delivery.replay import TargetRefused, replay
from app.delivery.reports import parse_listen_report
from app.storage import store
from app.web.urls import capture_url, view_url
from app.wiring import current_services

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


_INTERNAL_FIELDS = frozenset({"seq", "signing_rev"})


def public_request(item: dict[str, Any]) -> dict[str, Any]:
    """A stored request as the API shows it (internal bookkeeping left out)."""
    return {k: v for k, v in item.items() if k not in _INTERNAL_FIELDS}


def public_bin(bin_: dict[str, Any]) -> dict[str, Any]:
    """A bin with its absolute URLs (internal bookkeeping left out)."""
    shown = {k: v for k, v in bin_.items() if k not in _INTERNAL_FIELDS}
    return {**shown, "capture_url": capture_url(bin_["id"]), "view_url": view_url(bin_["id"])}


def public_attempt(attempt: dict[str, Any]) -> dict[str, Any]:
    """An attempt with its body as base64 (and as text when it is UTF-8).

    ``sent`` is what an edited or re-signed replay sent (null: the captured request as is), in
    the same fields the replay API takes.
    """
    body: bytes = attempt["body"]
    out = {k: v for k, v in attempt.items() if k != "body"}
    out["body_base64"] = base64.b64encode(body).decode()
    try:
        out["body_text"] = body.decode("utf-8")
    except UnicodeDecodeError:
        out["body_text"] = None
    sent = attempt.get("sent")
    if sent is not None:
        path, _, query = sent["suffix"].partition("?")
        sent_body: bytes = sent["body"]
        try:
            sent_text: str | None = sent_body.decode("utf-8")
        except UnicodeDecodeError:
            sent_text = None
        out["sent"] = {
            "method": attempt["method"],
            "path": path,
            "query": query,
            "headers": sent["headers"],
            "body_base64": base64.b64encode(sent_body).decode(),
            "body_text": sent_text,
            "body_size": len(sent_body),
        }
    return out


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


def _bin_or_404(bin_id: str) -> dict[str, Any]:
    found = store.get_bin(current_services().engine, bin_id)
    if found is None:
        abort(404)
    return found


def _request_or_404(request_id: str) -> dict[str, Any]:
    found = store.get_request(current_services().engine, request_id)
    if found is None:
        abort(404)
    return found


@bp.post("/bins")
def create_bin() -> tuple[Response, int]:
    """Create a bin: named when the body says ``{"name": ...}``, else with a random id."""
    name = None
    if request.get_data():  # the body is optional: no body, a random id as always
        data = _request_json(force=True)
        if not isinstance(data, dict):
            return _error(400, "expected a JSON object body (or no body)")
        try:
            name = bin_settings.check_name(data.get("name"))
        except Invalid as exc:
            return _invalid(exc)
    try:
        created = names.create_bin(current_services().engine, name, current_app.url_map)
    except names.NameRefused as exc:
        return _error(exc.status, str(exc))
    return jsonify(public_bin(created)), 201


@bp.get("/bins/<bin_id>")
def get_bin(bin_id: str) -> Response:
    """One bin."""
    return jsonify(public_bin(_bin_or_404(bin_id)))


@bp.patch("/bins/<bin_id>")
def patch_bin(bin_id: str) -> Response | tuple[Response, int]:
    """Change a bin's forward target, auto-forward switch, signing secrets and responses."""
    _bin_or_404(bin_id)
    try:
        # Saving responses (even unchanged) starts the bin's rule counters over.
        changes = bin_settings.changes_from_json(_json_body())
    except Invalid as exc:
        return _invalid(exc)
    services = current_services()
    updated = store.update_bin(services.engine, bin_id, **changes)
    services.bins.forget(bin_id)
    return jsonify(public_bin(updated or {}))


@bp.delete("/bins/<bin_id>")
def delete_bin(bin_id: str) -> tuple[str, int]:
    """Delete a bin and everything in it."""
    services = current_services()
    if not store.delete_bin(services.engine, bin_id):
        abort(404)
    services.bins.forget(bin_id)
    return "", 204


@bp.delete("/bins/<bin_id>/requests")
def clear_bin(bin_id: str) -> Response:
    """Delete every request of a bin."""
    _bin_or_404(bin_id)
    return jsonify({"deleted": store.clear_bin(current_services().engine, bin_id)})


@bp.get("/bins/<bin_id>/requests")
def list_requests(bin_id: str) -> Response | tuple[Response, int]:
    """A page of a bin's requests, newest first."""
    bin_ = _bin_or_404(bin_id)
    services = current_services()
    try:
        limit = paging.page_limit(request.args.get("limit"), services.settings.page_size)
        before_seq = paging.cursor(request.args.get("before"))
    except Invalid as exc:
        return _invalid(exc)
    items = store.list_requests(services.engine, bin_id, limit=limit, before_seq=before_seq)
    services.with_verdicts(bin_, items)
    next_cursor = items[-1]["id"] if len(items) == limit else None
    return jsonify({"items": [public_request(i) for i in items], "next": next_cursor})


@bp.get("/requests/<request_id>")
def get_request(request_id: str) -> Response:
    """One captured request (without its body)."""
    item = _request_or_404(request_id)
    current_services().with_verdicts(_bin_or_404(item["bin_id"]), [item])
    return jsonify(public_request(item))


@bp.delete("/requests/<request_id>")
def delete_request(request_id: str) -> tuple[str, int]:
    """Delete one captured request."""
    if not store.delete_request(current_services().engine, request_id):
        abort(404)
    return "", 204


@bp.get("/requests/<request_id>/body")
def get_body(request_id: str) -> Response:
    """The exact bytes captured, as a download that no browser will render."""
    import io

    item = _request_or_404(request_id)
    data = store.get_body(current_services().engine, item["seq"])
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
    item = _request_or_404(request_id)
    attempts = store.list_attempts(current_services().engine, item["seq"])
    return jsonify({"items": [public_attempt(a) for a in attempts]})


@bp.post("/requests/<request_id>/replay")
def replay_request(request_id: str) -> tuple[Response, int]:
    """Replay a request to ``url`` (default: the bin's forward URL)."""
    item = _request_or_404(request_id)
    data = _request_json() or {}
    if not isinstance(data, dict):
        return _error(400, "expected a JSON object body")
    services = current_services()
    try:
        url = bin_settings.check_target_url(data.get("url") or None)
    except Invalid as exc:
        return _invalid(exc)
    if url is None:
        url = (store.get_bin(services.engine, item["bin_id"]) or {}).get("forward_url")
    if not url:
        return _error(400, "give a target url (or set the bin's forward_url)")
    try:
        # Edit fields (method, path, query, headers, body, body_base64, resign) are optional.
        outgoing = outgoing_from_api(services, item, data, url)
        attempt = replay(services, item, url, request_host=request.host, outgoing=outgoing)
    except EditError as exc:
        return _error(400, str(exc))
    except TargetRefused as exc:
        return _error(422, str(exc))
    payload = public_attempt(attempt)
    if attempt["status"] is None:
        return jsonify({**payload, "error": attempt["error"]}), 502
    return jsonify(payload), 200


def public_forward(state: dict[str, Any]) -> dict[str, Any]:
    """A request's auto-forward state with the retry budget and a line for people."""
    return {
        **state,
        "max_tries": current_services().delivery.max_tries,
        "summary": describe(state),
    }


@bp.get("/requests/<request_id>/forward")
def forward_state(request_id: str) -> Response | tuple[Response, int]:
    """Where the auto-forward of a request stands (404 when it was never queued)."""
    item = _request_or_404(request_id)
    state = state_of(current_services().engine, item["seq"])
    if state is None:
        return _error(404, "this request was not queued for auto-forward")
    return jsonify(public_forward(state))


@bp.post("/requests/<request_id>/forward/retry")
def retry_forward(request_id: str) -> tuple[Response, int]:
    """Try the auto-forward of a request now: skip the wait, or re-open one given up on."""
    item = _request_or_404(request_id)
    services = current_services()
    state = services.writes.run(retry_now, item["seq"])
    if state is None:
        return _error(404, "this request was not queued for auto-forward")
    if state["state"] == DELIVERED:
        return _error(409, "already delivered; replay the request to send it again")
    services.delivery.wake()
    return jsonify(public_forward(state)), 202


@bp.get("/openapi.yaml")
def openapi() -> Response:
    """The OpenAPI description of this API."""
    text = (PROJECT_ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8")
    return Response(text, mimetype="application/yaml")


@bp.post("/requests/<request_id>/attempts")
def report_attempt(request_id: str) -> tuple[Response, int]:
    """Store the outcome of a delivery made elsewhere (``hookbin listen`` on a laptop)."""
    item = _request_or_404(request_id)
    try:
        report = parse_listen_report(_json_body())
    except Invalid as exc:
        return _invalid(exc)
    services = current_services()
    body = report.body
    cap = services.settings.replay_max_response_bytes
    attempt = store.add_attempt(
        services.engine,
        item["seq"],
        "listen",
        method=report.method,
        url=report.url,
        started_at=store.utcnow(),
        status=report.status,
        response_headers=report.headers,
        response_body=body[:cap],
        response_size=len(body),
        truncated=report.truncated or len(body) > cap,
        elapsed_ms=report.elapsed_ms,
        error=report.error,
    )
    return jsonify(public_attempt(attempt)), 201
