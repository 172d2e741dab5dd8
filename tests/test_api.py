"""The JSON API, as a program using Hookbin sees it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server


def test_create_bin_gives_absolute_urls_and_random_ids(shared_server: Server) -> None:
    a = shared_server.create_bin()
    b = shared_server.create_bin()
    assert a["id"] != b["id"]
    assert len(base64.urlsafe_b64decode(a["id"] + "==")) >= 16  # at least 128 random bits
    assert a["capture_url"] == f"{shared_server.url}/h/{a['id']}"
    # The view link carries the key that opens the bin; it leaves the browser holding the bin.
    assert a["view_url"].startswith(f"{shared_server.url}/bins/{a['id']}?key=hbk_")
    assert httpx.get(a["view_url"], follow_redirects=True).status_code == 200


def test_requests_page_newest_first_with_cursor(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    with httpx.Client() as client:
        sent = [client.post(f"{bin_['capture_url']}/{i}").json()["request_id"] for i in range(7)]
        assert sent == sorted(sent), "request ids sort in capture order"
        url = f"{shared_server.url}/api/bins/{bin_['id']}/requests"
        page1 = client.get(url, params={"limit": 3}).json()
        page2 = client.get(url, params={"limit": 3, "before": page1["next"]}).json()
        page3 = client.get(url, params={"limit": 3, "before": page2["next"]}).json()
    seen = [i["id"] for i in page1["items"] + page2["items"] + page3["items"]]
    assert seen == list(reversed(sent))
    assert page3["next"] is None
    assert [i["path"] for i in page1["items"]] == ["/6", "/5", "/4"]


def test_bad_paging_arguments_are_clear_errors(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    url = f"{shared_server.url}/api/bins/{bin_['id']}/requests"
    assert httpx.get(url, params={"limit": "ten"}).json() == {"error": "limit must be a number"}
    response = httpx.get(url, params={"before": "zzz"})
    assert response.status_code == 400 and "before" in response.json()["error"]
    assert httpx.get(f"{shared_server.url}/api/bins/nope/requests").status_code == 404


def test_one_request_and_its_raw_body(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    body = b"<html><script>alert(1)</script></html>\x00\xff"
    rid = httpx.post(
        bin_["capture_url"], content=body, headers={"Content-Type": "text/html"}
    ).json()["request_id"]
    item = httpx.get(f"{shared_server.url}/api/requests/{rid}").json()
    assert item["id"] == rid and item["body_size"] == len(body)
    raw = httpx.get(f"{shared_server.url}/api/requests/{rid}/body")
    assert raw.content == body
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["content-disposition"].startswith("attachment")
    assert raw.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in raw.headers["content-security-policy"]


def test_request_ids_cannot_be_guessed_from_one_another(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    rid = httpx.post(bin_["capture_url"]).json()["request_id"]
    # Same sequence number, different random part: not found.
    forged = rid[:12] + "0" * 20
    assert httpx.get(f"{shared_server.url}/api/requests/{forged}").status_code == 404


def test_delete_request_clear_and_delete_bin(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    api = f"{shared_server.url}/api"
    ids = [httpx.post(bin_["capture_url"]).json()["request_id"] for _ in range(3)]
    assert httpx.delete(f"{api}/requests/{ids[0]}").status_code == 204
    assert httpx.get(f"{api}/requests/{ids[0]}").status_code == 404
    assert httpx.delete(f"{api}/requests/{ids[0]}").status_code == 404
    assert httpx.delete(f"{api}/bins/{bin_['id']}/requests").json() == {"deleted": 2}
    assert httpx.get(f"{api}/bins/{bin_['id']}/requests").json()["items"] == []
    assert httpx.delete(f"{api}/bins/{bin_['id']}").status_code == 204
    assert httpx.get(f"{api}/bins/{bin_['id']}").status_code == 404
    assert httpx.post(bin_["capture_url"]).status_code == 404


def test_patch_bin_forward_settings(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    url = f"{shared_server.url}/api/bins/{bin_['id']}"
    patched = httpx.patch(url, json={"forward_url": "http://localhost:3000", "auto_forward": True})
    assert patched.status_code == 200
    assert patched.json()["forward_url"] == "http://localhost:3000"
    assert patched.json()["auto_forward"] is True
    bad = httpx.patch(url, json={"auto_forward": "yes"})
    assert bad.status_code == 400 and "auto_forward" in bad.json()["error"]
    assert httpx.patch(url, content=b"not json").status_code == 400


def test_healthz(shared_server: Server) -> None:
    assert httpx.get(f"{shared_server.url}/healthz").json() == {"ok": True}


def test_bad_json_shapes_are_400_never_500(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    rid = httpx.post(bin_["capture_url"], content=b"x").json()["request_id"]
    api = f"{shared_server.url}/api"
    deep = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError, not ValueError
    json_type = {"Content-Type": "application/json"}
    for method, path in [
        ("PATCH", f"/bins/{bin_['id']}"),
        ("POST", "/bins"),
        ("POST", f"/requests/{rid}/attempts"),
    ]:
        for body in (deep, b'{"responses": ' + deep + b"}"):
            answer = httpx.request(method, api + path, content=body, headers=json_type)
            assert answer.status_code == 400, (method, path, answer.text)
            assert "expected a JSON object body" in answer.json()["error"]
    # The replay body is optional: JSON it cannot read means "the bin's forward_url".
    replay = httpx.post(f"{api}/requests/{rid}/replay", content=deep, headers=json_type)
    assert replay.status_code == 400 and "give a target url" in replay.json()["error"]

    for value in (None, [], [1], 1, "x", True, {"x": 1}):
        for field in ("responses", "signing"):
            answer = httpx.patch(f"{api}/bins/{bin_['id']}", json={field: value})
            assert answer.status_code in (200, 400), (field, value, answer.text)


def test_text_that_cannot_be_stored_or_shown_is_refused(shared_server: Server) -> None:
    # "\ud800" is valid JSON but not UTF-8: stored, it made the bin's page (and, for a forward
    # URL, the PATCH itself) fail with a 500.
    bin_ = shared_server.create_bin()
    url = f"{shared_server.url}/api/bins/{bin_['id']}"
    json_type = {"Content-Type": "application/json"}
    for changes, message in [
        ({"forward_url": "http://localhost:3000/\ud800"}, "unpaired surrogates"),
        ({"forward_url": "http://localhost:3000/\u0000"}, "control characters"),
        ({"signing": {"provider": "stripe", "secrets": ["whsec_\ud800"]}}, "unpaired surrogates"),
        ({"responses": {"default": {"body": "\udcff"}}}, "unpaired surrogates"),
        ({"responses": {"rules": [{"header": {"name": "X", "equals": "\ud800"}}]}}, "surrogates"),
    ]:
        answer = httpx.patch(url, content=json.dumps(changes).encode(), headers=json_type)
        assert answer.status_code == 400, answer.text
        assert message in answer.json()["error"]
    assert httpx.get(bin_["view_url"], follow_redirects=True).status_code == 200
    kept = httpx.patch(url, json={"forward_url": " http://localhost:3000/x \n"})
    assert kept.status_code == 200 and kept.json()["forward_url"] == "http://localhost:3000/x"


def test_paging_limit_outside_the_documented_range_is_refused(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    url = f"{shared_server.url}/api/bins/{bin_['id']}/requests"
    for limit in ("0", "501", "-3"):
        answer = httpx.get(url, params={"limit": limit})
        assert answer.status_code == 400, limit
        assert answer.json() == {"error": "limit must be a number from 1 to 500"}
    for odd in ("1_0", " 5", "+", "٣"):  # int() alone would take the first two and the last
        assert httpx.get(url, params={"limit": odd}).json() == {"error": "limit must be a number"}
    assert httpx.get(url, params={"limit": "500"}).status_code == 200
    bad_cursor = httpx.get(url, params={"before": "+" + "0" * 31})
    assert bad_cursor.json() == {"error": "before must be a request id"}


def test_every_api_error_is_json(shared_server: Server) -> None:
    api = f"{shared_server.url}/api"
    not_allowed = httpx.put(f"{api}/bins")
    assert not_allowed.status_code == 405
    assert not_allowed.json() == {"error": "method not allowed"}
    assert "POST" in not_allowed.headers["allow"]
    assert httpx.get(f"{api}/no-such-thing").json() == {"error": "not found"}

    bin_ = shared_server.create_bin()
    stream = f"{api}/bins/{bin_['id']}/stream"
    # Not a websocket handshake, or an incomplete one: a JSON 400 naming what is missing, never
    # the websocket library's 500.
    for headers, missing in [
        ({}, "Connection"),
        ({"Connection": "Upgrade", "Upgrade": "websocket"}, "Sec-WebSocket-Version"),
        (
            {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"},
            "Sec-WebSocket-Key",
        ),
    ]:
        answer = httpx.get(stream, headers=headers)
        assert answer.status_code == 400, (headers, answer.text)
        assert missing in answer.json()["error"]
        assert answer.headers["sec-websocket-version"] == "13"
    old = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "8"}
    answer = httpx.get(stream, headers={**old, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert answer.status_code == 400 and "version" in answer.json()["error"]
    assert httpx.post(stream).json() == {"error": "method not allowed"}


def test_the_page_and_the_api_refuse_the_same_settings(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    api = f"{shared_server.url}/api/bins/{bin_['id']}"
    page = f"{shared_server.url}/bins/{bin_['id']}/settings"
    bad = "http://localhost:3000/a\x01b"
    by_api = httpx.patch(api, json={"forward_url": bad})
    assert by_api.status_code == 400
    message = by_api.json()["error"]
    assert "control characters" in message
    # The settings form goes through the same check.
    by_page = httpx.post(page, data={"forward_url": bad, "auto_forward": "on"})
    assert by_page.status_code == 422
    assert message in by_page.text
    # htmx gets the form back (200, so that it is swapped in), showing the same message.
    by_htmx = httpx.post(page, data={"forward_url": bad}, headers={"HX-Request": "true"})
    assert by_htmx.status_code == 200 and 'id="settings-error"' in by_htmx.text
    assert message in by_htmx.text
    unchanged = httpx.get(api).json()
    assert (unchanged["forward_url"], unchanged["auto_forward"]) == (None, False)
    # A page replay makes its target the bin's forward URL: the same check.
    rid = httpx.post(bin_["capture_url"]).json()["request_id"]
    replay = httpx.post(
        f"{shared_server.url}/bins/{bin_['id']}/requests/{rid}/replay", data={"url": bad}
    )
    assert replay.status_code == 422 and message.replace("forward_url", "url") in replay.text
    assert httpx.get(api).json()["forward_url"] is None

    bad_signing = {"signing_provider": "nope", "signing_secrets": ""}
    by_page = httpx.post(page, data={"forward_url": "", **bad_signing})
    by_api = httpx.patch(api, json={"signing": {"provider": "nope"}})
    assert (by_page.status_code, by_api.status_code) == (422, 400)
    assert by_api.json()["error"] in by_page.text


def test_setting_checks_are_shared_by_the_form_and_json(tmp_path: Path) -> None:
    from app.bins import binsfile
    from app.bins.settings import Invalid, changes_from_form, changes_from_json

    bin_ = {"signing": None, "responses": None}
    assert changes_from_json({"forward_url": "  http://a/x \n", "other": 1}) == {
        "forward_url": "http://a/x"
    }
    assert changes_from_form({"forward_url": "  http://a/x \n", "auto_forward": "on"}, bin_) == {
        "forward_url": "http://a/x",
        "auto_forward": True,
    }
    not_a_target = ["ftp://a/x", "localhost:3000/x", "http:///x", "http://[::1/x"]
    cases = [("http://a/\x7f", "forward_url"), ("http://a/\ud800", "forward_url")]
    for value, field in [*cases, *((url, "forward_url") for url in not_a_target)]:
        with pytest.raises(Invalid) as by_json:
            changes_from_json({field: value})
        with pytest.raises(Invalid) as by_form:
            changes_from_form({field: value}, bin_)
        assert by_json.value.field == by_form.value.field == field
        assert str(by_json.value) == str(by_form.value)
    with pytest.raises(Invalid, match="auto_forward must be true or false"):
        changes_from_json({"auto_forward": "on"})
    # The bins file takes the same forward_url rule.
    for url in not_a_target:
        with pytest.raises(Invalid) as by_json:
            changes_from_json({"forward_url": url})
        bins_file = tmp_path / "bins.toml"
        bins_file.write_text(f"[bins.team-bin]\nforward_url = {json.dumps(url)}\n", "utf-8")
        with pytest.raises(binsfile.BinsFileError) as by_file:
            binsfile.read(bins_file, set(), {})
        assert str(by_json.value) in str(by_file.value)
    with pytest.raises(Invalid) as signing:
        changes_from_form({"signing_provider": "nope", "signing_secrets": ""}, bin_)
    assert signing.value.field == "signing" and "signing.provider" in str(signing.value)
    # Unchanged signing is not a change (it would re-check every stored request).
    same = {"signing_provider": "auto", "signing_secrets": "\n"}
    assert "signing" not in changes_from_form(same, bin_)
