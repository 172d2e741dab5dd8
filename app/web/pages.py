"""The browser UI: thin views over storage and replay, rendered by Jinja (autoescaped)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from app.access import keys
from app.bins import names, paging
from app.bins.settings import changes_from_form, check_target_url
from app.capture.handler import CAPTURE_PREFIX
from app.config import format_duration
from app.core.invalid import Invalid
from app.delivery.queue import describe, retry_now, state_of
from app.delivery.replay import TargetRefused, replay
from app.inspect.bodyview import build_view
from app.inspect.display import hex_dump, human_size
from app.rules import form as answerform
from app.signing.common import PROVIDERS
from app.web import auth
from app.web.access_pages import access_context
from app.web.api import creation_refused
from app.web.auth import Grant, bin_or_404, forget, request_in_bin
from app.web.lookup import services, storage, verdicts_of
from app.web.serialize import secret_hint
from app.web.urls import capture_url

bp = Blueprint("web", __name__)

_HEX_CAP = 64 * 1024


@bp.app_context_processor
def _signing_providers() -> dict[str, Any]:
    return {"providers": ("auto", *PROVIDERS)}


@bp.app_template_global("secret_hint")
def _secret_hint(secret: str) -> str:
    return secret_hint(secret)


@bp.app_template_global("responses_fields")
def _responses_fields(bin_: dict[str, Any]) -> dict[str, str]:
    return answerform.to_form(bin_.get("responses"))


@bp.app_context_processor
def _responses_placeholder() -> dict[str, Any]:
    return {"rules_placeholder": answerform.RULES_PLACEHOLDER}


@bp.app_template_filter("duration")
def _duration(seconds: int | None) -> str:
    return "" if seconds is None else format_duration(seconds)


@bp.app_context_processor
def _server_limits() -> dict[str, Any]:
    settings = services().settings
    shown = format_duration(settings.retention_seconds)
    return {"server_limits": {"retention": shown, "max_requests": settings.bin_max_requests}}


@bp.app_template_filter("size")
def _size(n: int) -> str:
    return human_size(n)


@bp.app_errorhandler(404)
def _not_found(_exc: Exception) -> tuple[Response | str, int]:
    # The API answers its own 404s in JSON; everything else is a person with a browser, often
    # holding a bin address that was mistyped or whose bin was deleted.
    if request.path.startswith("/api/") or request.path.startswith(CAPTURE_PREFIX):
        return current_app.json.response({"error": "not found"}), 404
    bin_id = (request.view_args or {}).get("bin_id")
    return render_template("not_found.html", bin_id=bin_id), 404


@bp.app_errorhandler(SQLAlchemyError)
def _database_unavailable(exc: SQLAlchemyError) -> tuple[Response, int]:
    # The database is away or refused the work (a lost connection, a full disk, a lock held too
    # long): a passing condition, so clients are told to retry rather than shown a crash.
    current_app.logger.error("database error on %s %s", request.method, request.path, exc_info=exc)
    response = current_app.json.response({"error": "the database is unavailable; retry"})
    response.headers["Retry-After"] = "1"
    return response, 503


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


@bp.get("/healthz")
def healthz() -> tuple[dict[str, Any], int]:
    """Liveness for load balancers and container health checks: is the database answering?"""
    try:
        storage().ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        return {"ok": False, "error": type(exc).__name__}, 503
    return {"ok": True}, 200


def _held() -> list[dict[str, Any]]:
    """The bins this browser holds that still exist, newest first."""
    store = storage()
    shown = []
    for bin_id, grant in reversed(list(auth.held_bins().items())):
        found = store.get_bin(bin_id)
        if found is not None:
            shown.append({**found, "read_only": grant != "manage"})
    return shown


@bp.get("/")
def index() -> str:
    """Landing page with the one button that makes a bin, and the bins this browser holds."""
    return render_template("index.html", held=_held())


@bp.post("/bins")
def create_bin() -> ResponseReturnValue:
    """Create a bin (named when the form gives a name), keep it in this browser, open its page."""
    name = (request.form.get("name") or "").strip()
    if services().settings.create_bins == "token":
        message = "On this server only operators create bins (through the API)."
        return render_template("index.html", name=name, name_error=message, held=_held()), 403
    refused = creation_refused()
    if refused is not None:
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) != "text/html":
            return refused
        # A person at the form: the page again, saying why and for how long.
        response, status = refused
        error = response.get_json()["error"]
        page = render_template("index.html", name=name, name_error=error, held=_held())
        return page, status, {"Retry-After": response.headers["Retry-After"]}
    try:
        created = names.create_bin(
            storage(),
            name or None,
            current_app.url_map,
            token_hash=keys.digest(keys.new_token()),  # this one is never shown: make a new one
            page_key_salt=keys.new_salt(),
        )
    except names.NameRefused as exc:
        # Back to the form, with what was typed and why it cannot be used.
        page = render_template("index.html", name=name, name_error=str(exc), held=_held())
        return page, exc.status
    response = redirect(url_for("web.bin_page", bin_id=created["id"]), code=303)
    return auth.remember(response, created["id"], "manage")


def _page_context(bin_: dict[str, Any]) -> dict[str, Any]:
    limit = services().settings.page_size
    items = verdicts_of(bin_, storage().list_requests(bin_["id"], limit=limit))
    can_manage = auth.grant_of(bin_) is Grant.MANAGE
    return {
        "bin": bin_,
        "can_manage": can_manage,
        **(access_context(bin_) if can_manage else {}),
        "capture_url": capture_url(bin_["id"]),
        "items": items,
        "more": items[-1]["id"] if len(items) == limit else None,
        "total": storage().count_requests(bin_["id"]),
    }


@bp.get("/bins/<bin_id>")
def bin_page(bin_id: str) -> Response | str:
    """A bin: its capture URL, the live list of requests, the detail pane.

    Opened with its view link (``?key=``) or a share link (``?share=``), the page keeps the bin in
    this browser and sends it on to the plain address, so the key stays out of its history.
    """
    opened = _open_with_link(bin_id)
    if opened is not None:
        return opened
    return render_template("bin.html", **_page_context(bin_or_404(bin_id, Grant.READ)), detail=None)


def _open_with_link(bin_id: str) -> Response | None:
    key, share_key = request.args.get("key"), request.args.get("share")
    if not key and not share_key:
        return None
    store = storage()
    found = store.get_bin(bin_id)
    grant = None
    if found is not None and key:
        if keys.page_key_matches(auth.deployment_key(), bin_id, found["page_key_salt"], key):
            grant = "manage"
    elif found is not None and share_key:
        share = store.live_share(keys.digest(share_key))
        if share is not None and share["bin_id"] == bin_id:
            grant = f"share:{share['id']}"
    if grant is None:
        auth.refuse(Grant.NONE, Grant.READ, json=False)
    response = redirect(url_for("web.bin_page", bin_id=bin_id), code=303)
    return auth.remember(response, bin_id, grant)


@bp.get("/bins/<bin_id>/r/<request_id>")
def request_page(bin_id: str, request_id: str) -> str:
    """A bin's page with one request opened (a link that can be shared within a team)."""
    bin_ = bin_or_404(bin_id, Grant.READ)
    detail = _detail_context(bin_, request_in_bin(bin_id, request_id, Grant.READ))
    return render_template("bin.html", **{**_page_context(bin_), **detail}, detail=True)


@bp.get("/bins/<bin_id>/rows")
def older_rows(bin_id: str) -> str:
    """The next page of older requests (htmx "load more")."""
    bin_ = bin_or_404(bin_id, Grant.READ)
    try:
        before = paging.cursor(request.args.get("before"))
    except Invalid as exc:
        abort(400, str(exc))
    limit = services().settings.page_size
    items = verdicts_of(bin_, storage().list_requests(bin_id, limit=limit, before_seq=before))
    more = items[-1]["id"] if len(items) == limit else None
    return render_template("fragments/rows.html", items=items, bin_id=bin_id, more=more)


def _detail_context(bin_: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    store = storage()
    verdicts_of(bin_, [item])
    body = store.get_body(item["seq"])
    hex_lines, hex_truncated = hex_dump(body, _HEX_CAP)
    from urllib.parse import parse_qsl

    return {
        "bin": bin_,
        "item": item,
        "query": parse_qsl(item["query_string"], keep_blank_values=True),
        "view": build_view(body, [(h[0], h[1]) for h in item["headers"]]),
        "hex_lines": hex_lines,
        "hex_truncated": hex_truncated,
        "attempts": store.list_attempts(item["seq"]),
        "target": bin_["forward_url"] or "http://localhost:3000",
        "forward": _forward(store.read(state_of, item["seq"])),
    }


def _forward(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """An auto-forward state with its one-line summary, for ``fragments/forward.html``."""
    return None if state is None else {**state, "summary": describe(state)}


@bp.get("/bins/<bin_id>/requests/<request_id>/forward")
def forward_state(bin_id: str, request_id: str) -> str:
    """The auto-forward state block of a request (htmx fragment, reloads while pending).

    ``seen`` is how many attempts the page lists: when tries were made since, the attempts list
    comes along (out-of-band), so the page never says "gave up after 6 tries" over three.
    """
    item = request_in_bin(bin_id, request_id, Grant.READ)
    store = storage()
    forward = _forward(store.read(state_of, item["seq"]))
    attempts = store.list_attempts(item["seq"])
    seen = request.args.get("seen", type=int)
    changed = seen is not None and seen != len(attempts)
    return render_template(
        "fragments/forward.html",
        item=item,
        forward=forward,
        attempts=attempts,
        attempts_oob=changed,
    )


@bp.post("/bins/<bin_id>/requests/<request_id>/forward/retry")
def retry_forward(bin_id: str, request_id: str) -> str:
    """The "Retry now" button: make the forward due at once, or re-open one given up on."""
    item = request_in_bin(bin_id, request_id, Grant.MANAGE)
    current = services()
    forward = _forward(current.storage.write(retry_now, item["seq"]))
    current.delivery.wake()
    attempts = current.storage.list_attempts(item["seq"])
    return render_template(
        "fragments/forward.html", item=item, forward=forward, attempts=attempts, attempts_oob=True
    )


@bp.get("/bins/<bin_id>/requests/<request_id>")
def request_detail(bin_id: str, request_id: str) -> str:
    """The detail pane of one request (htmx fragment)."""
    bin_ = bin_or_404(bin_id, Grant.READ)
    detail = _detail_context(bin_, request_in_bin(bin_id, request_id, Grant.READ))
    return render_template("fragments/detail.html", **detail)


@bp.post("/bins/<bin_id>/requests/<request_id>/replay")
def replay_request(bin_id: str, request_id: str) -> str | tuple[str, int]:
    """Replay from the page; answers with the refreshed attempts list."""
    bin_ = bin_or_404(bin_id, Grant.MANAGE)
    item = request_in_bin(bin_id, request_id, Grant.MANAGE)
    current = services()
    error: str | None = None
    new_target: str | None = None
    try:
        url = check_target_url(request.form.get("url"))
        if url is None:
            raise Invalid("url", "Give a target URL.")
        new_target = remember_target(bin_, url)
        replay(current.storage, current.settings, item, url, request_host=request.host)
    except (Invalid, TargetRefused) as exc:
        error = str(exc)
    return attempts_fragment(item, error, 422, new_target)


def remember_target(bin_: dict[str, Any], url: str) -> str | None:
    """Make ``url`` the bin's default target (users expect the last one used); the new target,
    or None when it was the default already."""
    if url == bin_["forward_url"]:
        return None
    storage().update_bin(bin_["id"], forward_url=url)
    return url


def attempts_fragment(
    item: dict[str, Any], error: str | None, status: int, new_target: str | None
) -> str | tuple[str, int]:
    """The refreshed attempts list after a replay from the page.

    htmx only swaps 2xx answers in, so for htmx the error travels inside a 200 fragment; other
    clients get ``status``.
    """
    attempts = storage().list_attempts(item["seq"])
    html = render_template(
        "fragments/attempts.html",
        attempts=attempts,
        error=error,
        item=item,
        new_target=new_target if _is_htmx() else None,
    )
    return (html, status) if error and not _is_htmx() else html


@bp.post("/bins/<bin_id>/requests/<request_id>/delete")
def delete_request(bin_id: str, request_id: str) -> Response | str:
    """Delete one request."""
    request_in_bin(bin_id, request_id, Grant.MANAGE)
    store = storage()
    store.delete_request(request_id)
    if _is_htmx():
        html = render_template("fragments/deleted.html", total=store.count_requests(bin_id))
        # The address bar may still name the deleted request (/bins/<bin>/r/<request>).
        return Response(html, headers={"HX-Replace-Url": url_for("web.bin_page", bin_id=bin_id)})
    return redirect(url_for("web.bin_page", bin_id=bin_id), code=303)


def _settings_refused(bin_: dict[str, Any], refused: Invalid) -> str | tuple[str, int]:
    """The settings form again, nothing saved, showing what was typed and what is wrong."""
    form = request.form
    shown = {
        **bin_,
        "forward_url": form.get("forward_url", bin_["forward_url"]),
        "auto_forward": form.get("auto_forward") == "on",
    }
    if "signing_provider" in form:
        secrets = (form.get("signing_secrets") or "").splitlines()
        shown["signing"] = {"provider": form["signing_provider"], "secrets": secrets}
    if "retention" in form or "max_requests" in form:
        shown["limits_typed"] = {k: form.get(k, "") for k in ("retention", "max_requests")}
    if "senders" in form:
        shown["senders"] = (form.get("senders") or "").splitlines()
        shown["senders_action"] = form.get("senders_action", bin_.get("senders_action"))
    # A responses error shows inside that section, which the page may have folded away.
    where = "responses_error" if refused.field == "responses" else "settings_error"
    typed = {"responses_typed": answerform.typed(form), where: str(refused)}
    if _is_htmx():
        # 200: htmx swaps only successful answers in, and the form must show the error.
        return render_template("fragments/settings.html", bin=shown, **typed)
    page = {**_page_context(bin_), "bin": shown}
    return render_template("bin.html", **page, detail=None, **typed), 422


@bp.post("/bins/<bin_id>/settings")
def bin_settings(bin_id: str) -> Response | str | tuple[str, int]:
    """Save the forward target, the auto-forward switch, signing secrets, responses and limits."""
    bin_ = bin_or_404(bin_id, Grant.MANAGE)
    try:
        # Signing and responses are in only when changed: a change re-checks every stored
        # signature, or starts the rule counters over.
        changes = changes_from_form(request.form, bin_)
    except Invalid as exc:
        return _settings_refused(bin_, exc)
    updated = storage().update_bin(bin_id, **changes)
    if _is_htmx():
        return render_template("fragments/settings.html", bin=updated, saved=True)
    return redirect(url_for("web.bin_page", bin_id=bin_id), code=303)


@bp.post("/bins/<bin_id>/clear")
def clear_bin(bin_id: str) -> Response:
    """Delete every request of the bin."""
    bin_or_404(bin_id, Grant.MANAGE)
    storage().clear_bin(bin_id)
    return redirect(url_for("web.bin_page", bin_id=bin_id), code=303)


@bp.post("/bins/<bin_id>/delete")
def delete_bin(bin_id: str) -> Response:
    """Delete the bin and everything in it."""
    bin_or_404(bin_id, Grant.MANAGE)
    storage().delete_bin(bin_id)
    return forget(redirect(url_for("web.index"), code=303), bin_id)
