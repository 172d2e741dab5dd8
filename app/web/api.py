"""The JSON API under ``/api`` (documented in ``docs/openapi.yaml``)."""

from __future__ import annotations

import base64
import re
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request, send_file

from app.bins import names
from app.config import PROJECT_ROOT
from app.core.clock import utcnow
from app.delivery.edit import EditError, outgoing_from_api
from app.delivery.queue import DELIVERED, retry_now, state_of
from app.delivery.replay import TargetRefused, replay
from app.rules.validate import validate_responses
from app.signing import verdicts
from app.storage.ids import seq_from_id
from app.web.lookup import bin_or_404, request_or_404, services, storage, verdicts_of
from app.web.serialize import public_attempt, public_bin, public_forward, public_request

bp = Blueprint("api", __name__, url_prefix="/api")


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


@bp.errorhandler(404)
def _not_found(_exc: Exception) -> tuple[Response, int]:
    return _error(404, "not found")


@bp.errorhandler(405)
def _not_allowed(_exc: Exception) -> tuple[Response, int]:
    return _error(405, "method not allowed")


@bp.errorhandler(413)
def _too_large(_exc: Exception) -> tuple[Response, int]:
    return _error(413, "request body too large")


_BAD_URL_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


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


@bp.post("/bins")
def create_bin() -> tuple[Response, int]:
    """Create a bin: named when the body says ``{"name": ...}``, else with a random id."""
    name = None
    if request.get_data():  # the body is optional: no body, a random id as always
        data = _request_json(force=True)
        if not isinstance(data, dict):
            return _error(400, "expected a JSON object body (or no body)")
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            return _error(400, "name must be a string (or null for a random id)")
    try:
        created = names.create_bin(storage(), name, current_app.url_map)
    except names.NameRefused as exc:
        return _error(exc.status, str(exc))
    return jsonify(public_bin(created)), 201


@bp.get("/bins/<bin_id>")
def get_bin(bin_id: str) -> Response:
    """One bin."""
    return jsonify(public_bin(bin_or_404(bin_id)))


@bp.patch("/bins/<bin_id>")
def patch_bin(bin_id: str) -> Response | tuple[Response, int]:
    """Change a bin's forward target, auto-forward switch, signing secrets and responses."""
    bin_or_404(bin_id)
    data = _json_body()
    changes: dict[str, Any] = {}
    if "forward_url" in data:
        url = data["forward_url"]
        if url is not None and not isinstance(url, str):
            return _error(400, "forward_url must be a string or null")
        url = (url or "").strip() or None
        if url is not None and _BAD_URL_CHARS.search(url):
            # Never a valid URL, and the database (or the bin's page) could not store or show it.
            return _error(
                400, "forward_url may not contain control characters or unpaired surrogates"
            )
        changes["forward_url"] = url
    if "auto_forward" in data:
        if not isinstance(data["auto_forward"], bool):
            return _error(400, "auto_forward must be true or false")
        changes["auto_forward"] = data["auto_forward"]
    if "signing" in data:
        try:
            changes["signing"] = verdicts.validate_signing(data["signing"])
        except ValueError as exc:
            return _error(400, str(exc))
    if "responses" in data:
        # Saving responses (even unchanged) starts the bin's rule counters over.
        try:
            changes["responses"] = validate_responses(data["responses"])
        except ValueError as exc:
            return _error(400, str(exc))
    updated = storage().update_bin(bin_id, **changes)
    return jsonify(public_bin(updated or {}))


@bp.delete("/bins/<bin_id>")
def delete_bin(bin_id: str) -> tuple[str, int]:
    """Delete a bin and everything in it."""
    if not storage().delete_bin(bin_id):
        abort(404)
    return "", 204


@bp.delete("/bins/<bin_id>/requests")
def clear_bin(bin_id: str) -> Response:
    """Delete every request of a bin."""
    bin_or_404(bin_id)
    return jsonify({"deleted": storage().clear_bin(bin_id)})


@bp.get("/bins/<bin_id>/requests")
def list_requests(bin_id: str) -> Response | tuple[Response, int]:
    """A page of a bin's requests, newest first."""
    bin_ = bin_or_404(bin_id)
    try:
        limit = int(request.args.get("limit", services().settings.page_size))
    except ValueError:
        return _error(400, "limit must be a number")
    limit = max(1, min(limit, 500))
    before = request.args.get("before")
    before_seq = None
    if before:
        before_seq = seq_from_id(before)
        if before_seq is None:
            return _error(400, "before must be a request id")
    items = storage().list_requests(bin_id, limit=limit, before_seq=before_seq)
    verdicts_of(bin_, items)
    next_cursor = items[-1]["id"] if len(items) == limit else None
    return jsonify({"items": [public_request(i) for i in items], "next": next_cursor})


@bp.get("/requests/<request_id>")
def get_request(request_id: str) -> Response:
    """One captured request (without its body)."""
    item = request_or_404(request_id)
    verdicts_of(bin_or_404(item["bin_id"]), [item])
    return jsonify(public_request(item))


@bp.delete("/requests/<request_id>")
def delete_request(request_id: str) -> tuple[str, int]:
    """Delete one captured request."""
    if not storage().delete_request(request_id):
        abort(404)
    return "", 204


@bp.get("/requests/<request_id>/body")
def get_body(request_id: str) -> Response:
    """The exact bytes captured, as a download that no browser will render."""
    import io

    item = request_or_404(request_id)
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
    item = request_or_404(request_id)
    attempts = storage().list_attempts(item["seq"])
    return jsonify({"items": [public_attempt(a) for a in attempts]})


@bp.post("/requests/<request_id>/replay")
def replay_request(request_id: str) -> tuple[Response, int]:
    """Replay a request to ``url`` (default: the bin's forward URL)."""
    item = request_or_404(request_id)
    data = _request_json() or {}
    if not isinstance(data, dict):
        return _error(400, "expected a JSON object body")
    url = data.get("url")
    current = services()
    if not url:
        url = (current.storage.get_bin(item["bin_id"]) or {}).get("forward_url")
    if not isinstance(url, str) or not url:
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
    item = request_or_404(request_id)
    current = services()
    state = current.storage.read(state_of, item["seq"])
    if state is None:
        return _error(404, "this request was not queued for auto-forward")
    return jsonify(public_forward(state, current.delivery.max_tries))


@bp.post("/requests/<request_id>/forward/retry")
def retry_forward(request_id: str) -> tuple[Response, int]:
    """Try the auto-forward of a request now: skip the wait, or re-open one given up on."""
    item = request_or_404(request_id)
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


def _listen_attempt_fields(data: dict[str, Any]) -> dict[str, Any] | str:
    """The checked fields of a reported ``listen`` attempt, or what is wrong with them."""
    url, method = data.get("url"), data.get("method")
    if not isinstance(url, str) or not url:
        return "url must be a non-empty string"
    if not isinstance(method, str) or not method or len(method) > 64:
        return "method must be a string of 1 to 64 characters"
    status = data.get("status")
    if status is not None and (
        not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 999
    ):
        return "status must be an HTTP status code (100-999) or null"
    headers = data.get("headers", [])
    if not isinstance(headers, list) or not all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(part, str) for part in h)
        for h in headers
    ):
        return "headers must be a list of [name, value] string pairs"
    body_base64 = data.get("body_base64", "")
    if not isinstance(body_base64, str):
        return "body_base64 must be a string"
    try:
        body = base64.b64decode(body_base64, validate=True)
    except ValueError:  # binascii.Error
        return "body_base64 is not valid base64"
    elapsed = data.get("elapsed_ms", 0)
    if (
        not isinstance(elapsed, int | float)
        or isinstance(elapsed, bool)
        or not 0 <= elapsed < float("inf")
    ):
        return "elapsed_ms must be a non-negative number"
    error = data.get("error")
    if error is not None and not isinstance(error, str):
        return "error must be a string or null"
    truncated = data.get("truncated", False)
    if not isinstance(truncated, bool):
        return "truncated must be true or false"
    return {
        "url": url,
        "method": method,
        "status": status,
        "headers": [(name, value) for name, value in headers],
        "body": body,
        "elapsed_ms": float(elapsed),
        "error": error,
        "truncated": truncated,
    }


@bp.post("/requests/<request_id>/attempts")
def report_attempt(request_id: str) -> tuple[Response, int]:
    """Store the outcome of a delivery made elsewhere (``hookbin listen`` on a laptop)."""
    item = request_or_404(request_id)
    data = _json_body()
    kind = data.get("kind")
    if not isinstance(kind, str):
        return _error(400, "kind must be a string")
    if kind != "listen":
        return _error(
            422,
            'only kind "listen" can be reported; replays and forwards are stored by '
            "the server itself",
        )
    fields = _listen_attempt_fields(data)
    if isinstance(fields, str):
        return _error(400, fields)
    body: bytes = fields["body"]
    cap = services().settings.replay_max_response_bytes
    attempt = storage().add_attempt(
        item["seq"],
        "listen",
        method=fields["method"],
        url=fields["url"],
        started_at=utcnow(),
        status=fields["status"],
        response_headers=fields["headers"],
        response_body=body[:cap],
        response_size=len(body),
        truncated=fields["truncated"] or len(body) > cap,
        elapsed_ms=fields["elapsed_ms"],
        error=fields["error"],
    )
    return jsonify(public_attempt(attempt)), 201
