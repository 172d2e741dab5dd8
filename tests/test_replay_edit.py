"""Edited and re-signed replays, and the request diff.

The replays run end to end: a real ``hookbin serve`` captures the request, the API replays it to
a real local target (``tests/echo.py``), and the test looks at the bytes the target received.
Re-signed requests are checked at the target with the providers' own libraries (Stripe, Slack,
Standard Webhooks, Svix, Twilio) or, for schemes without one installed here (GitHub, Shopify,
Twitch, GitLab), with an HMAC computed in the test. The diff is checked as plain data
(``app.diffview``) and as the rendered page, where captured HTML must come out escaped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from app.inspect.diff import MAX_HEX_BYTES, Side, body_lines, compare, diff_lines
from tests.conftest import Server
from tests.echo import EchoTarget, Received, start_echo

STALE = 3600  # seconds: far outside every provider's tolerance


@pytest.fixture
def echo() -> Iterator[EchoTarget]:
    target = start_echo()
    yield target
    target.close()


def _capture(server: Server, bin_: dict, sub: str, **kwargs) -> str:
    response = httpx.request(
        kwargs.pop("method", "POST"), bin_["capture_url"] + sub, timeout=10, **kwargs
    )
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def _replay(server: Server, request_id: str, **payload) -> httpx.Response:
    return httpx.post(f"{server.url}/api/requests/{request_id}/replay", json=payload, timeout=20)


def _attempts(server: Server, request_id: str) -> list[dict]:
    response = httpx.get(f"{server.url}/api/requests/{request_id}/attempts", timeout=10)
    assert response.status_code == 200
    return response.json()["items"]


def _set_signing(server: Server, bin_: dict, provider: str, secrets_: list[str]) -> None:
    response = httpx.patch(
        f"{server.url}/api/bins/{bin_['id']}",
        json={"signing": {"provider": provider, "secrets": secrets_}},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def _values(received: Received, name: str) -> list[str]:
    return [v for n, v in received.headers if n.lower() == name.lower()]


# --- edits arrive exactly -----------------------------------------------------------------------


def test_edited_request_arrives_exactly_and_is_stored(shared_server: Server, echo) -> None:
    bin_ = shared_server.create_bin()
    rid = _capture(
        shared_server,
        bin_,
        "/orig/hook?x=1",
        content=b'{"event": "ping"}',
        headers=[
            ("Content-Type", "application/json"),
            ("X-Keep", "dropped by the edit"),
            ("X-Dup", "1"),
            ("X-Dup", "2"),
        ],
    )
    edited_headers = [
        ["Content-Type", "application/json; charset=utf-8"],
        ["X-Dup", "9"],
        ["x-new", "new value, with: colon"],
        ["X-Dup", "8"],
    ]
    body = '{"event": "pong", "note": "é"}'
    response = _replay(
        shared_server,
        rid,
        url=echo.url + "/base",
        method="PATCH",
        path="/edited/p%20ath",
        query="a=1&a=2&b=%3C",
        headers=edited_headers,
        body=body,
    )
    assert response.status_code == 200, response.text
    attempt = response.json()
    assert attempt["status"] == 201
    assert attempt["method"] == "PATCH"
    assert attempt["edited"] is True
    assert attempt["resigned"] is None

    [got] = echo.wait_for(1)
    assert got.method == "PATCH"
    assert got.path == "/base/edited/p%20ath?a=1&a=2&b=%3C"
    assert got.body == body.encode()
    host = echo.url.split("//")[1]
    # Exactly the edited list, in order with repeats, between the Host and the framing the
    # client writes itself.
    # (Plus the mark on everything Hookbin sends, so it never forwards its own traffic again.)
    assert _values(got, "Hookbin-Via")[0].startswith("hb-")
    assert [h for h in got.headers if h[0] != "Hookbin-Via"] == [
        ("Host", host),
        *[(n, v) for n, v in edited_headers],
        ("Content-Length", str(len(body.encode()))),
    ]

    sent = {
        "method": "PATCH",
        "path": "/edited/p%20ath",
        "query": "a=1&a=2&b=%3C",
        "headers": edited_headers,
        "body_base64": base64.b64encode(body.encode()).decode(),
        "body_text": body,
        "body_size": len(body.encode()),
    }
    assert attempt["sent"] == sent
    [stored] = _attempts(shared_server, rid)
    assert stored["sent"] == sent
    assert stored["edited"] is True
    assert stored["method"] == "PATCH"


def test_unedited_replays_store_nothing_extra(shared_server: Server, echo) -> None:
    bin_ = shared_server.create_bin()
    rid = _capture(shared_server, bin_, "/same?q=1", content=b"same", headers={"X-Same": "1"})
    captured = httpx.get(f"{shared_server.url}/api/requests/{rid}").json()
    plain = _replay(shared_server, rid, url=echo.url)
    # "Edits" that change nothing are a plain replay too (Host/Content-Length are dropped from
    # an edit just as from a plain replay, so sending the captured list back changes nothing).
    no_op = _replay(
        shared_server,
        rid,
        url=echo.url,
        method="POST",
        path="/same",
        query="q=1",
        headers=captured["headers"],
        body="same",
        resign=False,
    )
    for response in (plain, no_op):
        assert response.status_code == 200, response.text
        assert response.json()["sent"] is None
        assert response.json()["edited"] is False
    first, second = echo.wait_for(2)
    assert (first.method, first.path, first.body) == (second.method, second.path, second.body)
    assert first.headers == second.headers
    assert [a["sent"] for a in _attempts(shared_server, rid)] == [None, None]


def test_binary_body_edited_as_base64(shared_server: Server, echo) -> None:
    bin_ = shared_server.create_bin()
    rid = _capture(
        shared_server,
        bin_,
        "/blob",
        method="PUT",
        content=bytes(range(256)),
        headers={"Content-Type": "application/octet-stream"},
    )
    new = bytes(reversed(range(256))) + b"\x00\xff"
    wrapped = base64.encodebytes(new).decode()  # with line breaks, as pasted from a terminal
    response = _replay(shared_server, rid, url=echo.url, body_base64=wrapped)
    assert response.status_code == 200, response.text
    [got] = echo.wait_for(1)
    assert got.method == "PUT"
    assert got.body == new
    sent = response.json()["sent"]
    assert base64.b64decode(sent["body_base64"]) == new
    assert sent["body_text"] is None
    assert sent["body_size"] == len(new)


def test_emptied_post_body_still_carries_content_length(shared_server: Server, echo) -> None:
    bin_ = shared_server.create_bin()
    rid = _capture(shared_server, bin_, "/", content=b"something")
    response = _replay(shared_server, rid, url=echo.url, body="")
    assert response.status_code == 200, response.text
    [got] = echo.wait_for(1)
    assert got.body == b""
    assert _values(got, "Content-Length") == ["0"]


# --- bad edits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"method": "GE T"}, "not a valid HTTP method name"),
        ({"method": ""}, "method must not be empty"),
        ({"method": "X" * 65}, "longer than 64"),
        ({"method": 7}, "method must be a string"),
        ({"headers": [["X-Bad Name", "1"]]}, "not a valid header name"),
        ({"headers": [["X-Bad:Name", "1"]]}, "not a valid header name"),
        ({"headers": [["X-Inject", "a\r\nEvil: 1"]]}, "line break"),
        ({"headers": [["X-Inject", "a\nEvil: 1"]]}, "line break"),
        ({"headers": [["X-Nul", "a\x00b"]]}, "control character"),
        ({"headers": [["X-A", 1]]}, "must be strings"),
        ({"headers": "X-A: 1"}, "list of [name, value] pairs"),
        ({"headers": [["X-A"]]}, "list of [name, value] pairs"),
        ({"path": "no-slash"}, "path must start with /"),
        ({"path": "/a b"}, "spaces or control characters"),
        ({"path": "/a?b=1"}, "may not contain ? or #"),
        ({"query": "a=1#frag"}, "query may not contain #"),
        ({"query": "a=\r\n"}, "spaces or control characters"),
        ({"body": "x", "body_base64": "eA=="}, "not both"),
        ({"body_base64": "!!!"}, "body_base64 is not valid base64"),
        ({"body": 5}, "body must be a string"),
        ({"resign": "yes"}, "resign must be true or false"),
        ({"resign": 0}, "resign must be true or false"),
        ({"resign": True}, "no signing secret"),
    ],
)
def test_bad_edits_are_400_and_nothing_is_sent_or_stored(
    shared_server: Server, echo, edit: dict, message: str
) -> None:
    bin_ = shared_server.create_bin()
    rid = _capture(shared_server, bin_, "/x", content=b"{}")
    response = _replay(shared_server, rid, url=echo.url, **edit)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert _attempts(shared_server, rid) == []
    assert echo.received == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"path": "/a\ud800"}, "path contains unpaired surrogates"),
        ({"query": "a=\udcff"}, "query contains unpaired surrogates"),
        ({"headers": [["X-A", "\ud800"]]}, "the value of X-A contains unpaired surrogates"),
    ],
)
def test_lone_surrogates_in_an_edit_are_400_not_500(
    shared_server: Server, echo, edit: dict, message: str
) -> None:
    # Valid JSON ("\ud800" escapes), but no text encoding can put it on the wire or in the
    # database: it used to crash the request with a 500.
    bin_ = shared_server.create_bin()
    rid = _capture(shared_server, bin_, "/x", content=b"{}")
    response = httpx.post(
        f"{shared_server.url}/api/requests/{rid}/replay",
        content=json.dumps({"url": echo.url, **edit}).encode(),
        headers={"Content-Type": "application/json"},
        timeout=20,
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert _attempts(shared_server, rid) == []
    assert echo.received == []


def test_auto_provider_without_a_recognised_signature_refuses_to_resign(
    shared_server: Server, echo
) -> None:
    bin_ = shared_server.create_bin()
    _set_signing(shared_server, bin_, "auto", ["s3cret"])
    rid = _capture(shared_server, bin_, "/unsigned", content=b"{}")
    response = _replay(shared_server, rid, url=echo.url, resign=True)
    assert response.status_code == 400
    assert "no signature of a known provider" in response.json()["error"]
    assert _attempts(shared_server, rid) == []
    assert echo.received == []


# --- re-signing, checked by the providers' own libraries at the target ------------------------


@dataclass
class Scheme:
    """How one provider signs (for the captured request) and how its receiver checks."""

    provider: str
    bin_provider: str  # "auto" exercises the verdict's provider
    secret: str
    signature_headers: list[str]  # each must reach the target exactly once
    content_type: str
    body: bytes
    edited_body: bytes
    sign: Callable[[bytes, float], list[tuple[str, str]]]  # the captured (stale) signature
    verify: Callable[[Received, str], bool]  # the receiver's check; url = what it was called at


def _hmac_hex(key: bytes, msg: bytes) -> str:
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def _one(received: Received, name: str) -> str:
    """The header's only value; "" (which never verifies) when it is missing or repeated."""
    values = _values(received, name)
    return values[0] if len(values) == 1 else ""


def _stripe_scheme() -> Scheme:
    import stripe

    secret = "whsec_" + secrets.token_hex(16)

    def sign(body: bytes, ts: float) -> list[tuple[str, str]]:
        t = int(ts)
        return [
            ("Stripe-Signature", f"t={t},v1={_hmac_hex(secret.encode(), f'{t}.'.encode() + body)}")
        ]

    def verify(got: Received, _url: str) -> bool:
        try:
            stripe.Webhook.construct_event(got.body, _one(got, "Stripe-Signature"), secret)
        except stripe.SignatureVerificationError:
            return False
        return True

    event = {"id": "evt_1", "object": "event", "type": "invoice.paid"}
    return Scheme(
        "stripe",
        "stripe",
        secret,
        ["Stripe-Signature"],
        "application/json",
        json.dumps(event).encode(),
        json.dumps({**event, "type": "invoice.payment_failed"}).encode(),
        sign,
        verify,
    )


def _slack_scheme() -> Scheme:
    from slack_sdk.signature import SignatureVerifier

    secret = secrets.token_hex(16)

    def sign(body: bytes, ts: float) -> list[tuple[str, str]]:
        t = str(int(ts))
        mac = _hmac_hex(secret.encode(), f"v0:{t}:".encode() + body)
        return [("X-Slack-Request-Timestamp", t), ("X-Slack-Signature", f"v0={mac}")]

    def verify(got: Received, _url: str) -> bool:
        return SignatureVerifier(secret).is_valid(
            got.body, _one(got, "X-Slack-Request-Timestamp"), _one(got, "X-Slack-Signature")
        )

    return Scheme(
        "slack",
        "auto",
        secret,
        ["X-Slack-Signature", "X-Slack-Request-Timestamp"],
        "application/x-www-form-urlencoded",
        b"command=%2Fdeploy&text=api",
        b"command=%2Fdeploy&text=web",
        sign,
        verify,
    )


def _standard_scheme(provider: str) -> Scheme:
    if provider == "svix":
        from svix.webhooks import Webhook, WebhookVerificationError

        prefix = "svix"
    else:
        from standardwebhooks import Webhook
        from standardwebhooks.webhooks import WebhookVerificationError

        prefix = "webhook"
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()

    def sign(body: bytes, ts: float) -> list[tuple[str, str]]:
        msg_id = "msg_" + secrets.token_hex(8)
        signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
        return [
            (f"{prefix}-id", msg_id),
            (f"{prefix}-timestamp", str(int(ts))),
            (f"{prefix}-signature", signature),
        ]

    def verify(got: Received, _url: str) -> bool:
        headers = {
            name: _one(got, name)
            for name in (f"{prefix}-id", f"{prefix}-timestamp", f"{prefix}-signature")
        }
        try:
            Webhook(secret).verify(got.body, headers)
        except WebhookVerificationError:
            return False
        return True

    return Scheme(
        provider,
        "auto",
        secret,
        [f"{prefix}-id", f"{prefix}-timestamp", f"{prefix}-signature"],
        "application/json",
        b'{"type": "user.created", "data": {"id": 1}}',
        b'{"type": "user.created", "data": {"id": 2}}',
        sign,
        verify,
    )


def _github_scheme() -> Scheme:
    secret = secrets.token_hex(16)
    old_secret = secrets.token_hex(16)  # the captured request was signed with a rotated-out one

    def sign(body: bytes, _ts: float) -> list[tuple[str, str]]:
        return [
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", "sha256=" + _hmac_hex(old_secret.encode(), body)),
        ]

    def verify(got: Received, _url: str) -> bool:
        expected = "sha256=" + _hmac_hex(secret.encode(), got.body)
        return hmac.compare_digest(_one(got, "X-Hub-Signature-256"), expected)

    return Scheme(
        "github",
        "auto",
        secret,
        ["X-Hub-Signature-256"],
        "application/json",
        b'{"ref": "refs/heads/main"}',
        b'{"ref": "refs/heads/dev"}',
        sign,
        verify,
    )


def _shopify_scheme() -> Scheme:
    secret = secrets.token_hex(16)

    def digest(body: bytes) -> str:
        return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()

    def sign(body: bytes, _ts: float) -> list[tuple[str, str]]:
        return [("X-Shopify-Hmac-Sha256", digest(body)), ("X-Shopify-Topic", "orders/create")]

    def verify(got: Received, _url: str) -> bool:
        return hmac.compare_digest(_one(got, "X-Shopify-Hmac-Sha256"), digest(got.body))

    return Scheme(
        "shopify",
        "shopify",
        secret,
        ["X-Shopify-Hmac-Sha256"],
        "application/json",
        b'{"id": 1, "total": "10.00"}',
        b'{"id": 1, "total": "99.00"}',
        sign,
        verify,
    )


def _twitch_scheme() -> Scheme:
    secret = secrets.token_hex(16)

    def rfc3339(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def sign(body: bytes, ts: float) -> list[tuple[str, str]]:
        msg_id, stamp = secrets.token_hex(8), rfc3339(ts)
        mac = _hmac_hex(secret.encode(), (msg_id + stamp).encode() + body)
        return [
            ("Twitch-Eventsub-Message-Id", msg_id),
            ("Twitch-Eventsub-Message-Timestamp", stamp),
            ("Twitch-Eventsub-Message-Signature", f"sha256={mac}"),
        ]

    def verify(got: Received, _url: str) -> bool:
        msg_id = _one(got, "Twitch-Eventsub-Message-Id")
        stamp = _one(got, "Twitch-Eventsub-Message-Timestamp")
        mac = "sha256=" + _hmac_hex(secret.encode(), (msg_id + stamp).encode() + got.body)
        sent_at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        fresh = time.time() - sent_at.timestamp() < 600  # Twitch: "older than 10 minutes"
        return fresh and hmac.compare_digest(_one(got, "Twitch-Eventsub-Message-Signature"), mac)

    return Scheme(
        "twitch",
        "twitch",
        secret,
        ["Twitch-Eventsub-Message-Signature", "Twitch-Eventsub-Message-Timestamp"],
        "application/json",
        b'{"subscription": {"type": "channel.follow"}}',
        b'{"subscription": {"type": "channel.subscribe"}}',
        sign,
        verify,
    )


def _twilio_scheme() -> Scheme:
    from twilio.request_validator import RequestValidator

    token = secrets.token_hex(16)

    def sign(_body: bytes, _ts: float) -> list[tuple[str, str]]:
        # Signed for the URL Twilio called, i.e. Hookbin's capture URL: wrong for any target.
        return [
            (
                "X-Twilio-Signature",
                RequestValidator(token).compute_signature("https://hookbin.example/h/x", {}),
            )
        ]

    def verify(got: Received, url: str) -> bool:
        params = dict(parse_qsl(got.body.decode(), keep_blank_values=True))
        return RequestValidator(token).validate(url, params, _one(got, "X-Twilio-Signature"))

    return Scheme(
        "twilio",
        "twilio",
        token,
        ["X-Twilio-Signature"],
        "application/x-www-form-urlencoded",
        urlencode({"From": "+15550001", "Body": "hello"}).encode(),
        urlencode({"From": "+15550001", "Body": "edited"}).encode(),
        sign,
        verify,
    )


def _gitlab_scheme() -> Scheme:
    token = secrets.token_hex(16)

    def sign(_body: bytes, _ts: float) -> list[tuple[str, str]]:
        return [("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "an-old-token")]

    def verify(got: Received, _url: str) -> bool:
        return hmac.compare_digest(_one(got, "X-Gitlab-Token"), token)

    return Scheme(
        "gitlab",
        "auto",
        token,
        ["X-Gitlab-Token"],
        "application/json",
        b'{"object_kind": "push"}',
        b'{"object_kind": "tag_push"}',
        sign,
        verify,
    )


SCHEMES: dict[str, Callable[[], Scheme]] = {
    "stripe": _stripe_scheme,
    "slack": _slack_scheme,
    "standard-webhooks": lambda: _standard_scheme("standard-webhooks"),
    "svix": lambda: _standard_scheme("svix"),
    "github": _github_scheme,
    "shopify": _shopify_scheme,
    "twitch": _twitch_scheme,
    "twilio": _twilio_scheme,
    "gitlab": _gitlab_scheme,
}


@pytest.mark.parametrize("name", list(SCHEMES))
def test_resigned_edited_replay_verifies_at_the_target(
    shared_server: Server, echo, name: str
) -> None:
    scheme = SCHEMES[name]()
    bin_ = shared_server.create_bin()
    # The current secret first; the second one (rotation) must not be used to sign.
    _set_signing(
        shared_server, bin_, scheme.bin_provider, [scheme.secret, "older-" + scheme.secret]
    )
    signed = scheme.sign(scheme.body, time.time() - STALE)
    # A duplicated signature header must come out as one.
    duplicated = [signed[-1]] if name in ("stripe", "github") else []
    rid = _capture(
        shared_server,
        bin_,
        "/hook?src=test",
        content=scheme.body,
        headers=[("Content-Type", scheme.content_type), *signed, *duplicated, ("X-Other", "kept")],
    )
    called_at = echo.url + "/receiver/hook?src=test"

    # Control: the captured signature does not verify for the edited body at the target.
    plain = _replay(
        shared_server, rid, url=echo.url + "/receiver", body=scheme.edited_body.decode()
    )
    assert plain.status_code == 200, plain.text
    [unsigned] = echo.wait_for(1)
    assert unsigned.body == scheme.edited_body
    assert not scheme.verify(unsigned, called_at), "the oracle accepts a stale or wrong signature"

    response = _replay(
        shared_server,
        rid,
        url=echo.url + "/receiver",
        body=scheme.edited_body.decode(),
        resign=True,
    )
    assert response.status_code == 200, response.text
    attempt = response.json()
    assert attempt["resigned"] == name
    assert attempt["edited"] is True
    got = echo.wait_for(2)[1]
    assert got.body == scheme.edited_body
    assert scheme.verify(got, called_at), f"{name}: the re-signed replay does not verify"
    for header in scheme.signature_headers:
        assert len(_values(got, header)) == 1, f"{header} sent {len(_values(got, header))} times"
    assert _values(got, "X-Other") == ["kept"]
    # What was stored is exactly what went out.
    sent_headers = [tuple(h) for h in attempt["sent"]["headers"]]
    assert [
        h for h in got.headers if h[0].lower() not in ("host", "content-length", "hookbin-via")
    ] == sent_headers


def test_resign_without_edit_refreshes_a_stale_stripe_signature(
    shared_server: Server, echo
) -> None:
    import stripe

    scheme = _stripe_scheme()
    bin_ = shared_server.create_bin()
    _set_signing(shared_server, bin_, "auto", [scheme.secret])
    signed = scheme.sign(scheme.body, time.time() - STALE)
    rid = _capture(
        shared_server,
        bin_,
        "/stripe",
        content=scheme.body,
        headers=[("Content-Type", "application/json"), *signed],
    )
    verdict = httpx.get(f"{shared_server.url}/api/requests/{rid}").json()["signature"]
    assert verdict["provider"] == "stripe" and verdict["status"] == "invalid"  # stale

    response = _replay(shared_server, rid, url=echo.url, resign=True)
    assert response.status_code == 200, response.text
    attempt = response.json()
    assert attempt["edited"] is False
    assert attempt["resigned"] == "stripe"
    assert attempt["sent"]["body_text"] == scheme.body.decode()
    [got] = echo.wait_for(1)
    event = stripe.Webhook.construct_event(got.body, _one(got, "Stripe-Signature"), scheme.secret)
    assert event["id"] == "evt_1"
    [stored] = _attempts(shared_server, rid)
    assert stored["resigned"] == "stripe" and stored["edited"] is False


# --- the diff, as data --------------------------------------------------------------------------


def _side(
    body: bytes, *, headers=(("Content-Type", "application/json"),), method="POST", target="/x"
) -> Side:
    return Side("side", method, target, list(headers), body)


def test_json_bodies_are_pretty_printed_so_a_changed_key_is_one_line() -> None:
    left = _side(b'{"event":"paid","amount":4200,"customer":{"email":"a@example.com"}}')
    right = _side(b'{"event":"paid","amount":4300,"customer":{"email":"a@example.com"}}')
    body = compare(left, right).sections[2]
    assert not body.same
    changed = [r for r in body.rows if r.kind != "equal"]
    assert len(changed) == 1
    [row] = changed
    assert row.kind == "changed"
    assert row.left.text == '  "amount": 4200,'
    assert row.right.text == '  "amount": 4300,'
    # Only the differing characters are marked.
    assert [t for t, c in row.left.pieces if c] == ["2"]
    assert [t for t, c in row.right.pieces if c] == ["3"]
    assert row.left.number == row.right.number == 3
    assert any("pretty-printed" in n for n in body.notes)


def test_renamed_key_and_added_header_show_as_changes() -> None:
    left = Side(
        "l", "POST", "/x?a=1", [("Content-Type", "application/json"), ("X-A", "1")], b'{"a": 1}'
    )
    right = Side(
        "r",
        "PUT",
        "/x?a=1",
        [("Content-Type", "application/json"), ("X-A", "1"), ("X-B", "2")],
        b'{"b": 1}',
    )
    result = compare(left, right)
    line, headers, body = result.sections
    assert not result.same
    assert [r.kind for r in line.rows] == ["changed"]
    assert [r.kind for r in headers.rows] == ["equal", "equal", "added"]
    assert headers.rows[-1].right.text == "X-B: 2"
    assert [r.kind for r in body.rows] == ["equal", "changed", "equal"]


def test_identical_requests_are_the_same() -> None:
    side = _side(b'{"a": [1, 2, 3]}')
    result = compare(side, side)
    assert result.same
    assert all(r.kind in ("equal", "skip") for s in result.sections for r in s.rows)


def test_long_equal_runs_are_folded_with_context() -> None:
    left = [f"line {i}" for i in range(100)]
    right = list(left)
    right[50] = "changed"
    rows = diff_lines(left, right)
    assert [r.kind for r in rows] == ["skip", *["equal"] * 3, "changed", *["equal"] * 3, "skip"]
    assert rows[0].skipped == 47 and rows[-1].skipped == 46
    assert len(diff_lines(left, right, context=None)) == 100


def test_marking_changed_characters_has_a_budget() -> None:
    # Every line of two large bodies changed: comparing each pair character by character took
    # half a minute for 1 MiB bodies. Past the budget, changed lines are marked whole.
    rng = random.Random(7)
    left = ["".join(rng.choice("ab") for _ in range(450)) for _ in range(200)]
    right = [line[:-1] + "c" for line in left]
    started = time.perf_counter()
    rows = diff_lines(left, right)
    assert time.perf_counter() - started < 10
    assert [r.kind for r in rows] == ["changed"] * 200
    first, last = rows[0], rows[-1]
    assert len(first.left.pieces) > 1 and first.left.text == left[0]  # characters marked
    assert last.left.pieces == [(left[-1], True)] and last.right.pieces == [(right[-1], True)]


def test_small_binary_bodies_are_compared_as_hex() -> None:
    octet = (("Content-Type", "application/octet-stream"),)
    left = _side(bytes(range(64)), headers=octet)
    right = _side(bytes(range(32)) + b"\xff" + bytes(range(33, 64)), headers=octet)
    body = compare(left, right).sections[2]
    assert not body.same
    assert any("hex dumps compared" in n for n in body.notes)
    [row] = [r for r in body.rows if r.kind != "equal"]
    assert row.left.text.startswith("00000020  20 21") and " ff " in row.right.text


def test_large_binary_bodies_only_say_they_differ() -> None:
    octet = (("Content-Type", "application/octet-stream"),)
    left = _side(b"\x00" * (MAX_HEX_BYTES + 1), headers=octet)
    right = _side(b"\x00" * (MAX_HEX_BYTES + 5), headers=octet)
    body = compare(left, right).sections[2]
    assert body.rows == []
    assert not body.same
    assert f"{MAX_HEX_BYTES + 1} vs {MAX_HEX_BYTES + 5} bytes" in body.notes[0]
    assert body.notes[0].startswith("binary bodies differ")
    same = compare(left, left).sections[2]
    assert same.same and same.notes[0].startswith("binary bodies are identical")


def test_json_on_one_side_only_is_compared_as_text() -> None:
    body = compare(_side(b'{"a": 1}'), _side(b'{"a": 1')).sections[2]
    assert any("compared as text" in n for n in body.notes)
    assert [(r.left.text, r.right.text) for r in body.rows] == [('{"a": 1}', '{"a": 1')]


def test_form_bodies_are_one_field_per_line() -> None:
    form = (("Content-Type", "application/x-www-form-urlencoded"),)
    mode, lines = body_lines(b"a=1&b=x%0Ay&c=%3Cb%3E", form)
    assert mode == "form"
    assert lines == ["a=1", "b=x\\ny", "c=<b>"]


def test_line_ending_difference_gets_a_note() -> None:
    text = (("Content-Type", "text/plain"),)
    body = compare(_side(b"a\nb\n", headers=text), _side(b"a\r\nb\r\n", headers=text)).sections[2]
    assert not body.same
    assert any("line endings differ (LF vs CRLF)" in n for n in body.notes)


# --- the diff page -----------------------------------------------------------------------------

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="alert(1)">{{7*7}}'


def test_diff_page_escapes_captured_html(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    a = _capture(
        shared_server,
        bin_,
        "/a",
        content=json.dumps({"html": HOSTILE, "n": 1}).encode(),
        headers={"Content-Type": "application/json", "X-Evil": HOSTILE},
    )
    b = _capture(
        shared_server,
        bin_,
        "/a",
        content=json.dumps({"html": HOSTILE + "<b>", "n": 1}).encode(),
        headers={"Content-Type": "application/json", "X-Evil": "<svg onload=alert(1)>"},
    )
    response = httpx.get(f"{shared_server.url}/bins/{bin_['id']}/diff", params={"a": a, "b": b})
    assert response.status_code == 200
    page = response.text
    for raw in ("<script>window", "<img src=x", "<svg onload", "<b>"):
        assert raw not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    # Changed characters are wrapped in our own spans; without them the text reads escaped.
    text = re.sub(r'</?span( class="chg")?>', "", page)
    assert "X-Evil: &lt;svg onload=alert(1)&gt;" in text
    assert "X-Evil: &lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;img src=x onerror=" in text
    assert "{{7*7}}" in page  # shown literally, never evaluated
    assert "&lt;b&gt;" in page
    assert 'class="changed"' in page
    # The JSON body's changed line is marked, and the equal key is not.
    assert '<span class="chg">&lt;b&gt;</span>' in page


def test_diff_with_an_edited_replay(shared_server: Server, echo) -> None:
    bin_ = shared_server.create_bin()
    rid = _capture(
        shared_server,
        bin_,
        "/hook",
        content=b'{"status": "old"}',
        headers={"Content-Type": "application/json", "X-Trace": "1"},
    )
    other = _capture(shared_server, bin_, "/other", content=b"x")
    attempt = _replay(
        shared_server,
        rid,
        url=echo.url,
        headers=[["Content-Type", "application/json"], ["X-Trace", "2"]],
        body='{"status": "new"}',
    ).json()
    url = f"{shared_server.url}/bins/{bin_['id']}/diff"
    page = httpx.get(url, params={"a": rid, "attempt": attempt["id"]})
    assert page.status_code == 200
    assert 'X-Trace: <span class="chg">1</span>' in page.text
    assert 'X-Trace: <span class="chg">2</span>' in page.text
    assert '&#34;status&#34;: &#34;<span class="chg">old</span>&#34;' in page.text
    # Host and Content-Length are not replayed, so they are no difference either.
    assert "Host:" not in page.text and "Content-Length:" not in page.text

    # The request page links to the diff from the attempt.
    detail = httpx.get(f"{shared_server.url}/bins/{bin_['id']}/requests/{rid}").text
    assert f"/bins/{bin_['id']}/diff?a={rid}&amp;attempt={attempt['id']}" in detail

    # With only "a", the page offers what to compare with.
    picker = httpx.get(url, params={"a": rid}).text
    assert f"b={other}" in picker and f"attempt={attempt['id']}" in picker

    assert httpx.get(url, params={"a": other, "attempt": attempt["id"]}).status_code == 404
    assert httpx.get(url, params={"a": rid, "attempt": "x"}).status_code == 404
    for odd in ("\u00b2", "9" * 30):  # isdigit() but not an int, or too big for the database
        assert httpx.get(url, params={"a": rid, "attempt": odd}).status_code == 404
    assert httpx.get(url).status_code == 400
    assert (
        httpx.get(url, params={"a": rid, "b": other, "attempt": attempt["id"]}).status_code == 400
    )
    elsewhere = shared_server.create_bin()
    assert (
        httpx.get(f"{shared_server.url}/bins/{elsewhere['id']}/diff", params={"a": rid}).status_code
        == 404
    )


# --- the page's form --------------------------------------------------------------------------


def test_edit_form_is_prefilled_and_keeps_line_endings(shared_server: Server, echo) -> None:
    bin_ = shared_server.create_bin()
    body = "\nfirst line\nsecond <b>line</b>\n"  # starts with a newline: must survive the textarea
    rid = _capture(
        shared_server,
        bin_,
        "/txt?q=1&r=a%26b",
        content=body.encode(),
        headers=[("Content-Type", "text/plain"), ("X-A", '"quoted" & <tag>')],
    )
    form_url = f"{shared_server.url}/bins/{bin_['id']}/requests/{rid}/edit"
    form = httpx.get(form_url).text
    assert 'value="/txt"' in form
    assert 'value="q=1&amp;r=a%26b"' in form
    assert "X-A: &#34;quoted&#34; &amp; &lt;tag&gt;" in form
    assert "\n\nfirst line\nsecond &lt;b&gt;line&lt;/b&gt;\n</textarea>" in form
    assert 'id="edit-resign" name="resign" disabled' in form  # the bin has no secret

    # As a browser submits it: every line break as CRLF.
    fields = {
        "method": "POST",
        "path": "/txt",
        "query": "q=1&r=a%26b",
        "headers": 'Content-Type: text/plain\r\nX-A: "quoted" & <tag>',
        "body_mode": "text",
        "body": body.replace("\n", "\r\n").replace("second", "2nd"),
        "url": echo.url,
    }
    response = httpx.post(
        f"{shared_server.url}/bins/{bin_['id']}/requests/{rid}/replay-edited",
        files={k: (None, v) for k, v in fields.items()},
    )
    assert response.status_code == 200, response.text
    [got] = echo.wait_for(1)
    assert got.body == body.replace("second", "2nd").encode()  # LF, as captured
    assert 'class="badge edited"' in response.text

    fields["headers"] = "Bad Header: 1"
    refused = httpx.post(
        f"{shared_server.url}/bins/{bin_['id']}/requests/{rid}/replay-edited",
        files={k: (None, v) for k, v in fields.items()},
    )
    assert refused.status_code == 400
    assert "headers line 1" in refused.text
    assert len(_attempts(shared_server, rid)) == 1
