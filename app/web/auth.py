"""Access control for pages, the API and streams, over the rules in ``app.access``.

The capture URL stays open to any sender; everything else about a bin needs its token, its view
link (remembered by the browser's cookie), a share link (read only) or an operator token. A
request without a grant learns nothing, not even whether the bin exists.
"""

from __future__ import annotations

from typing import Any, NoReturn
from urllib.parse import urlsplit

from flask import abort, current_app, g, render_template, request
from werkzeug.wrappers import Response

from app.access import cookie, keys
from app.access.grants import Credentials, Grant, grant_for, is_operator
from app.web.lookup import services, storage

__all__ = [
    "Grant",
    "forget",
    "bin_or_404",
    "credentials",
    "cross_site",
    "deployment_key",
    "grant_of",
    "held_bins",
    "operator",
    "refuse",
    "remember",
    "request_in_bin",
    "request_or_404",
]


def deployment_key() -> str:
    """The deployment's own secret (signs cookies, derives view-link keys)."""
    return storage().deployment_key()


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def credentials(*, query_token: bool = False) -> Credentials:
    """What the current request presents: a bearer token (``?token=`` too, for streams)."""
    bearer = _bearer()
    if bearer is None and query_token:
        bearer = request.args.get("token") or None
    return Credentials(bearer=bearer, cookie=held_bins())


def held_bins() -> dict[str, str]:
    """The grants in this browser's cookie."""
    if "held_bins" not in g:
        g.held_bins = cookie.read(deployment_key(), request.cookies.get(cookie.NAME))
    return dict(g.held_bins)


def operator(creds: Credentials | None = None) -> bool:
    """Whether the current request carries an operator token."""
    tokens = services().settings.admin_tokens
    return is_operator(creds or credentials(), tokens)


def grant_of(bin_: dict[str, Any] | None, creds: Credentials | None = None) -> Grant:
    """What the current request may do with ``bin_`` (None: a bin that does not exist)."""
    store = storage()
    return grant_for(
        bin_,
        creds or credentials(),
        operator_tokens=services().settings.admin_tokens,
        share_of=store.live_share,
        share_alive=store.share_alive,
    )


def _api() -> bool:
    return request.path.startswith("/api/")


def bin_or_404(bin_id: str, need: Grant) -> dict[str, Any]:
    """The bin ``bin_id`` when the request may do what ``need`` says with it.

    Without a grant the answer is 401 whether or not the bin exists; only those who may see it
    learn that it is gone (404).
    """
    creds = credentials(query_token=False)
    found = storage().get_bin(bin_id)
    grant = grant_of(found, creds)
    if grant < need:
        refuse(grant, need, json=_api())
    if found is None:
        abort(404)
    return found


def request_or_404(request_id: str, need: Grant) -> dict[str, Any]:
    """The request ``request_id`` when the request may do what ``need`` says with its bin."""
    store = storage()
    item = store.get_request(request_id)
    bin_ = store.get_bin(item["bin_id"]) if item is not None else None
    grant = grant_of(bin_)
    if grant < need:
        refuse(grant, need, json=_api())
    if item is None or bin_ is None:
        abort(404)
    return item


def request_in_bin(bin_id: str, request_id: str, need: Grant) -> dict[str, Any]:
    """Request ``request_id`` of bin ``bin_id``, when the request may do what ``need`` says."""
    bin_or_404(bin_id, need)
    item = storage().get_request(request_id)
    if item is None or item["bin_id"] != bin_id:
        abort(404)
    return item


def refuse(grant: Grant, need: Grant, *, json: bool) -> NoReturn:
    """Answer a request whose grant is below ``need``: 401 without one, 403 with a read-only one."""
    if grant is Grant.NONE:
        message = "this needs the bin's token (Authorization: Bearer <token>) or its view link"
        status = 401
    else:
        message = "a share link can only read this bin"
        status = 403
    if json:
        response = current_app.json.response({"error": message})
        response.status_code = status
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="hookbin"'
    else:
        html = render_template("private.html", message=message)
        response = Response(html, status=404 if status == 401 else 403, mimetype="text/html")
    abort(response)


def remember(response: Response, bin_id: str, grant: str) -> Response:
    """Let this browser keep ``grant`` ("manage" or "share:<id>") on ``bin_id``."""
    grants = cookie.with_grant(held_bins(), bin_id, grant)
    _set_cookie(response, grants)
    return response


def forget(response: Response, bin_id: str) -> Response:
    """Drop ``bin_id`` from this browser's list (a deleted bin)."""
    _set_cookie(response, cookie.without(held_bins(), bin_id))
    return response


def _set_cookie(response: Response, grants: dict[str, str]) -> None:
    response.set_cookie(
        cookie.NAME,
        cookie.write(deployment_key(), grants),
        max_age=cookie.MAX_AGE_SECONDS,
        httponly=True,
        samesite="Lax",
        secure=request.scheme == "https",
        path="/",
    )


def own_hosts() -> set[str]:
    """Host names (with port) this server answers to as itself."""
    hosts = {request.host.lower()}
    public = services().settings.public_url
    if public:
        hosts.add(urlsplit(public).netloc.lower())
    return hosts


def cross_site() -> bool:
    """Whether the current request was sent by another site's page (a forged form or socket).

    Browsers say so in ``Sec-Fetch-Site`` or, failing that, ``Origin``; a request with neither
    did not come from a page, so it carries no cookie a page could abuse.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin:
        if origin == "null":
            return True
        return urlsplit(origin).netloc.lower() not in own_hosts()
    return False


def refuse_cross_site_writes() -> None:
    """Refuse a write that another site's page sent with this browser's cookie (CSRF).

    Registered for every page and API request; a request that authenticates with a bearer token
    carries no ambient credential, so it is not at risk.
    """
    if request.method in ("GET", "HEAD", "OPTIONS") or _bearer() is not None:
        return
    if cross_site():
        if _api():
            response = current_app.json.response({"error": "cross-site request refused"})
            response.status_code = 403
            abort(response)
        abort(403, "this form was sent by another site")


def page_key_of(bin_: dict[str, Any]) -> str | None:
    """The key of ``bin_``'s view link, for those who may manage it."""
    salt = bin_.get("page_key_salt")
    return keys.page_key(deployment_key(), bin_["id"], salt) if salt else None
