"""The Access panel of a bin's page: its view link, API token and read-only share links.

Only those who may manage the bin see it. A new token or share key is shown once, in the answer
that made it; only its digest is kept.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, render_template, request

from app.access import keys
from app.web import auth
from app.web.auth import Grant, bin_or_404
from app.web.lookup import storage
from app.web.urls import view_url

bp = Blueprint("access", __name__)


def access_context(bin_: dict[str, Any], **shown: Any) -> dict[str, Any]:
    """What the Access panel shows: the view link, share links, a secret just made."""
    return {
        "view_link": view_url(bin_["id"], auth.page_key_of(bin_)),
        "shares": storage().list_shares(bin_["id"]),
        **shown,
    }


def _access_panel(bin_: dict[str, Any], **shown: Any) -> str:
    context = access_context(bin_, access_open=True, **shown)
    if request.headers.get("HX-Request") == "true":
        return render_template("fragments/access.html", bin=bin_, **context)
    return render_template("access.html", bin=bin_, **context)


@bp.post("/bins/<bin_id>/token")
def new_token(bin_id: str) -> str:
    """A new API token for the bin, shown once; the old one stops working."""
    bin_ = bin_or_404(bin_id, Grant.MANAGE)
    token = keys.new_token()
    updated = storage().update_bin(bin_id, token_hash=keys.digest(token)) or bin_
    return _access_panel(updated, new_token=token)


@bp.post("/bins/<bin_id>/view-link")
def new_view_link(bin_id: str) -> str:
    """A new view link; every older one stops working (this browser keeps the bin)."""
    bin_or_404(bin_id, Grant.MANAGE)
    updated = storage().update_bin(bin_id, page_key_salt=keys.new_salt())
    return _access_panel(updated or {})


@bp.post("/bins/<bin_id>/shares")
def new_share(bin_id: str) -> str:
    """A read-only share link of the bin, shown once."""
    bin_ = bin_or_404(bin_id, Grant.MANAGE)
    share_key = keys.new_share_key()
    label = (request.form.get("label") or "").strip()[:100] or None
    storage().add_share(bin_id, keys.new_salt(), keys.digest(share_key), label)
    link = view_url(bin_id).split("?")[0] + "?" + urlencode({"share": share_key})
    return _access_panel(bin_, new_share=link)


@bp.post("/bins/<bin_id>/shares/<share_id>/revoke")
def revoke_share(bin_id: str, share_id: str) -> str:
    """Revoke one share link: whoever opened it loses the bin at once."""
    bin_ = bin_or_404(bin_id, Grant.MANAGE)
    storage().revoke_share(bin_id, share_id)
    return _access_panel(bin_)
