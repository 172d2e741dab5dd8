"""Pages for edited and re-signed replays and for comparing requests (Jinja, autoescaped).

* ``GET  /bins/<bin>/requests/<id>/edit``: the "Edit & replay" form, prefilled (htmx fragment).
* ``POST /bins/<bin>/requests/<id>/replay-edited``: send the edited request; answers with the
  refreshed attempts list, like the plain replay button.
* ``GET  /bins/<bin>/diff?a=<id>&b=<id>`` or ``?a=<id>&attempt=<attempt id>``: a side-by-side
  comparison; with only ``a`` it lists what ``a`` can be compared with.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, abort, render_template, request
from werkzeug.datastructures import MultiDict

from app.bins.settings import check_target_url
from app.core.invalid import Invalid
from app.delivery.client import replay_headers
from app.delivery.edit import (
    EditError,
    build_outgoing,
    edit_from_form,
    editable_body,
    header_lines,
    resign_plan,
)
from app.delivery.replay import TargetRefused, replay, suffix_of
from app.inspect.diff import Side, compare
from app.web.auth import Grant, bin_or_404, request_in_bin
from app.web.lookup import services, storage, verdicts_of
from app.web.pages import attempts_fragment, remember_target

bp = Blueprint("webreplay", __name__)


def _resign_choice(bin_: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """Whether the page offers re-signing, with which provider, and ticked or not."""
    try:
        provider, _secret = resign_plan(bin_["signing"], item)
    except EditError as exc:
        return {"enabled": False, "provider": None, "why_not": str(exc), "checked": False}
    # Ticked when the request came signed: an edit would otherwise break its signature.
    signed = bool((item.get("signature") or {}).get("provider"))
    return {"enabled": True, "provider": provider, "why_not": None, "checked": signed}


@bp.get("/bins/<bin_id>/requests/<request_id>/edit")
def edit_form(bin_id: str, request_id: str) -> str:
    """The "Edit & replay" form of one request, prefilled with what a replay would send.

    The target is the one typed next to the Replay button (sent along as ``url``), if any.
    """
    bin_ = bin_or_404(bin_id, Grant.READ)
    item = request_in_bin(bin_id, request_id, Grant.READ)
    verdicts_of(bin_, [item])
    headers = replay_headers([(name, value) for name, value in item["headers"]])
    return render_template(
        "fragments/edit_replay.html",
        item=item,
        headers_text=header_lines(headers),
        body=editable_body(storage().get_body(item["seq"])),
        target=(request.args.get("url") or "").strip()
        or bin_["forward_url"]
        or "http://localhost:3000",
        resign=_resign_choice(bin_, item),
    )


@bp.post("/bins/<bin_id>/requests/<request_id>/replay-edited")
def replay_edited(bin_id: str, request_id: str) -> str | tuple[str, int]:
    """Send the edited (and possibly re-signed) request; answers with the attempts list."""
    bin_ = bin_or_404(bin_id, Grant.MANAGE)
    item = request_in_bin(bin_id, request_id, Grant.MANAGE)
    current = services()
    form: MultiDict[str, str] = request.form
    error, status = None, 200
    new_target: str | None = None
    try:
        url = check_target_url(form.get("url"))
        if not url:
            raise EditError("Give a target URL.")
        verdicts_of(bin_, [item])  # "auto" re-signs with the recognised provider
        captured = current.storage.get_body(item["seq"])
        outgoing = build_outgoing(
            item,
            captured,
            edit_from_form(form, captured),
            signing=bin_["signing"],
            url=url,
            now=time.time(),
        )
        new_target = remember_target(bin_, url)
        replay(
            current.storage,
            current.settings,
            item,
            url,
            request_host=request.host,
            outgoing=outgoing,
        )
    except (EditError, Invalid) as exc:
        error, status = str(exc), 400
    except TargetRefused as exc:
        error, status = str(exc), 422
    return attempts_fragment(item, error, status, new_target)


def _request_side(item: dict[str, Any], body: bytes, *, as_replayed: bool = False) -> Side:
    headers = [(name, value) for name, value in item["headers"]]
    if as_replayed:
        headers = replay_headers(headers)
    return Side(
        label=f"request {item['id']}",
        method=item["method"],
        target=suffix_of(item),
        headers=headers,
        body=body,
    )


def _attempt_side(attempt: dict[str, Any], fallback: Side) -> Side:
    sent = attempt["sent"]
    label = f"{attempt['kind']} #{attempt['id']} to {attempt['url']}"
    if sent is None:  # sent as captured
        return Side(label, fallback.method, fallback.target, fallback.headers, fallback.body)
    return Side(
        label=label,
        method=attempt["method"],
        target=sent["suffix"],
        headers=[(name, value) for name, value in sent["headers"]],
        body=sent["body"],
    )


@bp.get("/bins/<bin_id>/diff")
def diff_page(bin_id: str) -> str:
    """Compare request ``a`` with request ``b``, or with what replay ``attempt`` of it sent."""
    bin_ = bin_or_404(bin_id, Grant.READ)
    current = services()
    store = current.storage
    a_id = request.args.get("a", "")
    b_id = request.args.get("b", "")
    attempt_arg = request.args.get("attempt", "")
    if not a_id:
        abort(400, "give the request to compare as ?a=<request id>")
    if b_id and attempt_arg:
        abort(400, "compare with another request (b) or with a replay (attempt), not both")
    left_item = request_in_bin(bin_id, a_id, Grant.READ)
    left_body = store.get_body(left_item["seq"])
    comparison = None
    right_item = None
    attempt = None
    if b_id:
        right_item = request_in_bin(bin_id, b_id, Grant.READ)
        comparison = compare(
            _request_side(left_item, left_body),
            _request_side(right_item, store.get_body(right_item["seq"])),
        )
    elif attempt_arg:
        # ASCII digits only ("²".isdigit() is true), and few enough for a database integer.
        if not (attempt_arg.isascii() and attempt_arg.isdigit() and len(attempt_arg) <= 18):
            abort(404)
        attempt = store.get_attempt(left_item["seq"], int(attempt_arg))
        if attempt is None:
            abort(404)
        # Host, Content-Length and hop-by-hop headers are never replayed: leave them out of the
        # captured side too, so that only real edits show.
        left = _request_side(left_item, left_body, as_replayed=True)
        comparison = compare(left, _attempt_side(attempt, left))
    candidates = [
        r
        for r in store.list_requests(bin_id, limit=current.settings.page_size)
        if r["id"] != left_item["id"]
    ]
    replays = [a for a in store.list_attempts(left_item["seq"]) if a["sent"] is not None]
    return render_template(
        "diff.html",
        bin=bin_,
        left_item=left_item,
        right_item=right_item,
        attempt=attempt,
        comparison=comparison,
        candidates=candidates,
        replays=replays,
    )
