"""Who may read or manage a bin, through a real ``hookbin serve``.

A stranger who learns a capture URL may send to it, nothing more. The bin's token manages it; a
share link reads it; an operator token reaches every bin; without any, the API says 401 and
reveals nothing, not even whether the bin exists.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator

import httpx
import pytest
import websocket

from app.config import Settings
from tests.conftest import Server, start_server

OPERATOR = "op-" + "x" * 40
pytestmark = pytest.mark.anonymous


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("access")
    server = start_server(
        f"sqlite:///{tmp / 'hookbin.sqlite3'}", tmp, extra_env={"HOOKBIN_ADMIN_TOKEN": OPERATOR}
    )
    yield server
    server.stop()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _new_bin(srv: Server, **body: object) -> dict:
    made = httpx.post(f"{srv.url}/api/bins", json=body or None)
    assert made.status_code == 201, made.text
    return made.json()


def test_creating_a_bin_answers_its_token_and_view_link_once(srv: Server) -> None:
    made = _new_bin(srv)
    token = made["token"]
    assert len(token) >= 40  # 256 random bits, URL-safe
    assert "?key=hbk_" in made["view_url"]
    shown = httpx.get(f"{srv.url}/api/bins/{made['id']}", headers=_auth(token)).json()
    assert "token" not in shown and "token_hash" not in shown and "page_key_salt" not in shown
    assert shown["view_url"] == made["view_url"]  # whoever manages it can copy the link again


def test_without_a_token_a_stranger_may_only_send(srv: Server) -> None:
    made = _new_bin(srv)
    sent = httpx.post(made["capture_url"] + "/x", content=b'{"secret": 1}')
    assert sent.status_code == 200
    rid = sent.json()["request_id"]
    bin_api = f"{srv.url}/api/bins/{made['id']}"
    calls = [
        ("GET", bin_api),
        ("PATCH", bin_api),
        ("DELETE", bin_api),
        ("GET", f"{bin_api}/requests"),
        ("DELETE", f"{bin_api}/requests"),
        ("GET", f"{srv.url}/api/requests/{rid}"),
        ("GET", f"{srv.url}/api/requests/{rid}/body"),
        ("GET", f"{srv.url}/api/requests/{rid}/attempts"),
        ("POST", f"{srv.url}/api/requests/{rid}/replay"),
        ("GET", f"{srv.url}/api/requests/{rid}/forward"),
        ("DELETE", f"{srv.url}/api/requests/{rid}"),
        ("POST", f"{bin_api}/shares"),
        ("POST", f"{bin_api}/token"),
    ]
    other = _new_bin(srv)["token"]
    for headers in ({}, _auth(other), _auth("hbt_guess"), {"Authorization": "Basic eA=="}):
        for method, url in calls:
            answer = httpx.request(method, url, headers=headers, json={"forward_url": None})
            assert answer.status_code == 401, (method, url, headers, answer.text)
            assert answer.headers["content-type"].startswith("application/json")
            assert "secret" not in answer.text
            assert answer.headers["www-authenticate"].startswith("Bearer")
    # Nothing was changed or deleted along the way.
    items = httpx.get(f"{bin_api}/requests", headers=_auth(made["token"])).json()["items"]
    assert [i["id"] for i in items] == [rid]


def test_a_missing_bin_looks_like_a_private_one_to_all_but_operators(srv: Server) -> None:
    token = _new_bin(srv)["token"]
    url = f"{srv.url}/api/bins/no-such-bin-here"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=_auth(token)).status_code == 401
    assert httpx.get(url, headers=_auth(OPERATOR)).status_code == 404
    assert httpx.get(f"{srv.url}/api/requests/{'0' * 32}", headers=_auth(token)).status_code == 401


def test_operators_list_and_manage_every_bin(srv: Server) -> None:
    made = [_new_bin(srv) for _ in range(3)]
    assert httpx.get(f"{srv.url}/api/bins").status_code == 401
    assert httpx.get(f"{srv.url}/api/bins", headers=_auth(made[0]["token"])).status_code == 401
    first = httpx.get(f"{srv.url}/api/bins?limit=2", headers=_auth(OPERATOR)).json()
    assert [b["id"] for b in first["items"]] == [made[2]["id"], made[1]["id"]]
    assert all("token" not in b and "?key=" not in b["view_url"] for b in first["items"])
    rest = httpx.get(
        f"{srv.url}/api/bins?limit=2&before={first['next']}", headers=_auth(OPERATOR)
    ).json()
    assert rest["items"][0]["id"] == made[0]["id"]
    patched = httpx.patch(
        f"{srv.url}/api/bins/{made[0]['id']}",
        headers=_auth(OPERATOR),
        json={"forward_url": "http://127.0.0.1:9/x"},
    )
    assert patched.status_code == 200 and patched.json()["forward_url"] == "http://127.0.0.1:9/x"


def test_share_links_read_and_cannot_change_then_die_when_revoked(srv: Server) -> None:
    made = _new_bin(srv)
    owner = _auth(made["token"])
    rid = httpx.post(made["capture_url"], content=b"hello").json()["request_id"]
    share = httpx.post(
        f"{srv.url}/api/bins/{made['id']}/shares", headers=owner, json={"label": "teammate"}
    )
    assert share.status_code == 201
    key = share.json()["key"]
    assert "?share=hbs_" in share.json()["url"]
    reader = _auth(key)
    assert httpx.get(f"{srv.url}/api/bins/{made['id']}/requests", headers=reader).status_code == 200
    assert httpx.get(f"{srv.url}/api/requests/{rid}/body", headers=reader).content == b"hello"
    shown = httpx.get(f"{srv.url}/api/bins/{made['id']}", headers=reader).json()
    assert "?key=" not in shown["view_url"]  # reading does not hand out the view link
    for method, url in [
        ("PATCH", f"{srv.url}/api/bins/{made['id']}"),
        ("DELETE", f"{srv.url}/api/bins/{made['id']}/requests"),
        ("POST", f"{srv.url}/api/requests/{rid}/replay"),
        ("DELETE", f"{srv.url}/api/requests/{rid}"),
        ("POST", f"{srv.url}/api/bins/{made['id']}/shares"),
    ]:
        refused = httpx.request(method, url, headers=reader, json={})
        assert refused.status_code == 403, (method, url, refused.text)
    other = _new_bin(srv)
    assert httpx.get(f"{srv.url}/api/bins/{other['id']}", headers=reader).status_code == 401

    listed = httpx.get(f"{srv.url}/api/bins/{made['id']}/shares", headers=owner).json()["items"]
    assert [(s["label"], s["revoked_at"]) for s in listed] == [("teammate", None)]
    assert "key" not in listed[0]
    revoked = httpx.delete(
        f"{srv.url}/api/bins/{made['id']}/shares/{listed[0]['id']}", headers=owner
    )
    assert revoked.status_code == 204
    assert httpx.get(f"{srv.url}/api/bins/{made['id']}", headers=reader).status_code == 401


def test_a_new_token_retires_the_old_one(srv: Server) -> None:
    made = _new_bin(srv)
    renewed = httpx.post(f"{srv.url}/api/bins/{made['id']}/token", headers=_auth(made["token"]))
    new_token = renewed.json()["token"]
    assert new_token != made["token"]
    bin_url = f"{srv.url}/api/bins/{made['id']}"
    assert httpx.get(bin_url, headers=_auth(made["token"])).status_code == 401
    assert httpx.get(bin_url, headers=_auth(new_token)).status_code == 200


def test_signing_secrets_are_write_only(srv: Server) -> None:
    made = _new_bin(srv)
    owner = _auth(made["token"])
    secret = "gh-secret-that-nobody-may-read-back"
    patched = httpx.patch(
        f"{srv.url}/api/bins/{made['id']}",
        headers=owner,
        json={"signing": {"provider": "github", "secrets": [secret]}},
    )
    assert patched.status_code == 200
    for shown in (
        patched.json(),
        httpx.get(f"{srv.url}/api/bins/{made['id']}", headers=owner).json(),
    ):
        assert secret not in json.dumps(shown)
        assert shown["signing"] == {
            "provider": "github",
            "secrets_set": 1,
            "secret_hints": ["\u2026" + secret[-4:]],
        }
    # The page's settings form does not show it either.
    cookie_page = httpx.get(made["view_url"], follow_redirects=True)
    assert cookie_page.status_code == 200 and secret not in cookie_page.text
    # Changing the provider without sending secrets keeps the saved one.
    kept = httpx.patch(
        f"{srv.url}/api/bins/{made['id']}", headers=owner, json={"signing": {"provider": "github"}}
    )
    assert kept.json()["signing"]["secrets_set"] == 1
    body = b'{"zen": "keep it logically awesome"}'
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    rid = httpx.post(
        made["capture_url"], content=body, headers={"X-Hub-Signature-256": f"sha256={digest}"}
    ).json()["request_id"]
    verdict = httpx.get(f"{srv.url}/api/requests/{rid}", headers=owner).json()["signature"]
    assert verdict["status"] == "valid", verdict


def test_the_stream_needs_a_token_and_refuses_other_sites(srv: Server) -> None:
    made = _new_bin(srv)
    stream = f"{srv.ws_url}/api/bins/{made['id']}/stream"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(stream, timeout=5)
    assert refused.value.status_code == 401
    with pytest.raises(websocket.WebSocketBadStatusException) as foreign:
        websocket.create_connection(
            f"{stream}?token={made['token']}", timeout=5, origin="http://evil.example"
        )
    assert foreign.value.status_code == 403
    for ws in (
        websocket.create_connection(f"{stream}?token={made['token']}", timeout=5),
        websocket.create_connection(stream, timeout=5, header=_auth(made["token"])),
    ):
        httpx.post(made["capture_url"], content=b"live")
        frame = json.loads(ws.recv())
        assert frame["type"] == "request"
        ws.close()


def test_view_link_sets_the_browser_cookie_and_a_new_link_retires_it(srv: Server) -> None:
    made = _new_bin(srv)
    page = f"{srv.url}/bins/{made['id']}"
    stranger = httpx.get(page)
    assert stranger.status_code == 404
    assert made["id"] not in stranger.text  # the page says nothing of the bin
    with httpx.Client() as browser:
        opened = browser.get(made["view_url"])
        assert opened.status_code == 303 and opened.headers["location"].endswith(
            f"/bins/{made['id']}"
        )
        set_cookie = opened.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=lax" in set_cookie
        assert browser.get(page).status_code == 200
        home = browser.get(f"{srv.url}/")
        assert made["id"] in home.text  # the home page lists the bins this browser holds
        # A new view link: the old one no longer opens the bin; this browser keeps it.
        renewed = httpx.post(
            f"{srv.url}/api/bins/{made['id']}/view-link", headers=_auth(made["token"])
        ).json()
        assert renewed["view_url"] != made["view_url"]
        assert browser.get(page).status_code == 200
    assert httpx.get(made["view_url"]).status_code == 404
    assert httpx.get(renewed["view_url"]).status_code == 303


def test_page_writes_from_another_site_are_refused(srv: Server) -> None:
    made = _new_bin(srv)
    httpx.post(made["capture_url"], content=b"keep me")
    with httpx.Client() as browser:
        browser.get(made["view_url"])
        clear = f"{srv.url}/bins/{made['id']}/clear"
        forged = browser.post(clear, headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403
        forged = browser.post(clear, headers={"Sec-Fetch-Site": "cross-site"})
        assert forged.status_code == 403
        count = httpx.get(
            f"{srv.url}/api/bins/{made['id']}/requests", headers=_auth(made["token"])
        ).json()["items"]
        assert len(count) == 1
        same = browser.post(clear, headers={"Origin": srv.url, "Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 303
    left = httpx.get(f"{srv.url}/api/bins/{made['id']}/requests", headers=_auth(made["token"]))
    assert left.json()["items"] == []


def test_only_loopback_names_are_served_on_a_loopback_server(srv: Server) -> None:
    made = _new_bin(srv)
    for path in ("/", f"/api/bins/{made['id']}"):
        rebound = httpx.get(f"{srv.url}{path}", headers={"Host": "attacker.example"})
        assert rebound.status_code == 421, path
    localhost = httpx.get(f"{srv.url}/", headers={"Host": f"localhost:{srv.port}"})
    assert localhost.status_code == 200
    # Senders are not held to it: the capture URL answers whatever Host a proxy sets.
    sent = httpx.post(made["capture_url"], headers={"Host": "hooks.example.com"}, content=b"x")
    assert sent.status_code == 200


def test_defaults_that_follow_the_listen_address() -> None:
    laptop = Settings(listen_host="127.0.0.1")
    server = Settings(listen_host="0.0.0.0")  # noqa: S104 - what is being tested
    assert laptop.private_targets_allowed and not laptop.exposed
    assert not server.private_targets_allowed and server.exposed
    assert Settings(listen_host="::", allow_private_targets="true").private_targets_allowed
    assert not Settings(allow_private_targets="false").private_targets_allowed
    with pytest.raises(ValueError, match="HOOKBIN_CREATE_BINS"):
        Settings(create_bins="everyone")
    with pytest.raises(ValueError, match="HOOKBIN_ALLOW_PRIVATE_TARGETS"):
        Settings(allow_private_targets="sometimes")
