"""Signature verdicts and duplicate deliveries, as a user of a real server sees them.

Senders are simulated with the providers' own libraries where they exist (Stripe's, Standard
Webhooks'), so "valid" means what the provider means by it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest
import websocket

from app.capture.delivery_ids import delivery_of
from tests.conftest import Server

stripe = pytest.importorskip("stripe", reason="the stripe library is a test dependency")
standardwebhooks = pytest.importorskip("standardwebhooks")

STRIPE_SECRET = "whsec_test_secret_one"
EVENT = {"id": "evt_1Q2w3E", "object": "event", "type": "invoice.paid"}
BODY = json.dumps(EVENT).encode()


def _stripe_header(body: bytes, secret: str, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=timestamp or int(time.time())
    )


def _send(bin_: dict, body: bytes, headers: dict, path: str = "/hook") -> str:
    r = httpx.post(bin_["capture_url"] + path, content=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["request_id"]


def _item(server: Server, request_id: str) -> dict:
    r = httpx.get(f"{server.url}/api/requests/{request_id}", timeout=10)
    assert r.status_code == 200
    return r.json()


def _patch(server: Server, bin_id: str, payload: dict) -> httpx.Response:
    return httpx.patch(f"{server.url}/api/bins/{bin_id}", json=payload, timeout=10)


def test_stripe_verdicts_follow_the_secret(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    assert (
        _patch(
            shared_server,
            bin_["id"],
            {"signing": {"provider": "stripe", "secrets": [STRIPE_SECRET]}},
        ).status_code
        == 200
    )

    good = _send(bin_, BODY, {"Stripe-Signature": _stripe_header(BODY, STRIPE_SECRET)})
    tampered = _send(
        bin_,
        BODY.replace(b"paid", b"void"),
        {"Stripe-Signature": _stripe_header(BODY, STRIPE_SECRET)},
    )
    stale = _send(
        bin_,
        BODY,
        {"Stripe-Signature": _stripe_header(BODY, STRIPE_SECRET, int(time.time()) - 412)},
    )
    unsigned = _send(bin_, BODY, {"Content-Type": "application/json"})
    garbage = _send(bin_, BODY, {"Stripe-Signature": "t=\u00e9\u00e9,v1=<script>".encode()})

    assert _item(shared_server, good)["signature"] == {
        "provider": "stripe",
        "status": "valid",
        "reason": "signed with this bin's secret #1",
    }
    bad = _item(shared_server, tampered)["signature"]
    assert bad["status"] == "invalid" and "differs" in bad["reason"]
    old = _item(shared_server, stale)["signature"]
    assert old["status"] == "invalid" and "old" in old["reason"] and "300" in old["reason"]
    assert _item(shared_server, unsigned)["signature"]["status"] == "missing"
    assert _item(shared_server, garbage)["signature"]["status"] == "invalid"

    # A new secret: everything is checked again. Rotation: old and new both accepted.
    _patch(shared_server, bin_["id"], {"signing": {"provider": "stripe", "secrets": ["whsec_new"]}})
    assert _item(shared_server, good)["signature"]["status"] == "invalid"
    _patch(
        shared_server,
        bin_["id"],
        {"signing": {"provider": "stripe", "secrets": ["whsec_new", STRIPE_SECRET]}},
    )
    items = httpx.get(f"{shared_server.url}/api/bins/{bin_['id']}/requests").json()["items"]
    by_id = {i["id"]: i["signature"] for i in items}
    assert by_id[good] == {
        "provider": "stripe",
        "status": "valid",
        "reason": "signed with this bin's secret #2",
    }
    assert by_id[tampered]["status"] == "invalid"


def test_auto_detects_the_provider_and_says_when_there_is_no_secret(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    wh = standardwebhooks.Webhook(secret)
    msg_id, now = "msg_2b7", time.time()
    from datetime import UTC, datetime

    signature = wh.sign(msg_id, datetime.fromtimestamp(now, UTC), BODY.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": signature,
    }
    first = _send(bin_, BODY, headers)
    assert _item(shared_server, first)["signature"] == {
        "provider": "standard-webhooks",
        "status": "unchecked",
        "reason": "no secret configured",
    }
    _patch(shared_server, bin_["id"], {"signing": {"provider": "auto", "secrets": [secret]}})
    assert _item(shared_server, first)["signature"]["status"] == "valid"


def test_github_secret_signs_the_raw_bytes(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    _patch(shared_server, bin_["id"], {"signing": {"provider": "github", "secrets": ["s3cret"]}})
    body = b'{"zen": "Keep it logically awesome.",  "hook_id": 1}'  # odd spacing on purpose
    mac = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    rid = _send(bin_, body, {"X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Delivery": "d-1"})
    assert _item(shared_server, rid)["signature"]["status"] == "valid"


def test_bad_signing_settings_are_refused_clearly(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    for payload, words in [
        ({"signing": {"provider": "paypal", "secrets": []}}, "signing.provider"),
        ({"signing": {"provider": "github", "secrets": "abc"}}, "list of strings"),
        ({"signing": "github"}, "object"),
    ]:
        r = _patch(shared_server, bin_["id"], payload)
        assert r.status_code == 400 and words in r.json()["error"]
    assert _patch(shared_server, bin_["id"], {"signing": None}).json()["signing"] is None


def test_repeated_deliveries_are_marked_as_duplicates(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    other = shared_server.create_bin()
    first = _send(bin_, b"{}", {"X-GitHub-Delivery": "72d3162e"})
    again = _send(bin_, b"{}", {"X-GitHub-Delivery": "72d3162e"})
    third = _send(bin_, b"{}", {"X-GitHub-Delivery": "72d3162e"})
    fresh = _send(bin_, b"{}", {"X-GitHub-Delivery": "ffff0000"})
    elsewhere = _send(other, b"{}", {"X-GitHub-Delivery": "72d3162e"})
    stripe_a = _send(bin_, BODY, {"Stripe-Signature": "t=1,v1=00"})
    stripe_b = _send(bin_, BODY, {"Stripe-Signature": "t=2,v1=00"})

    assert _item(shared_server, first)["duplicate_of"] is None
    assert _item(shared_server, again)["duplicate_of"] == first
    assert _item(shared_server, third)["duplicate_of"] == first
    assert _item(shared_server, fresh)["duplicate_of"] is None
    assert _item(shared_server, elsewhere)["duplicate_of"] is None  # other bin, other story
    assert _item(shared_server, stripe_b)["duplicate_of"] == stripe_a
    assert _item(shared_server, again)["delivery_id"] == "github:72d3162e"


def test_concurrent_duplicates_in_one_commit_point_at_the_first(shared_server: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    bin_ = shared_server.create_bin()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: _send(bin_, b"{}", {"svix-id": "msg_same"}), range(16)))
    items = httpx.get(f"{shared_server.url}/api/bins/{bin_['id']}/requests").json()["items"]
    ordered = sorted(items, key=lambda i: i["id"])
    assert {i["id"] for i in items} == set(ids)
    assert ordered[0]["duplicate_of"] is None
    assert all(i["duplicate_of"] == ordered[0]["id"] for i in ordered[1:])


def test_the_stream_carries_verdicts_and_duplicates(shared_server: Server) -> None:
    bin_ = shared_server.create_bin()
    ws = websocket.create_connection(
        f"{shared_server.ws_url}/api/bins/{bin_['id']}/stream?after={'0' * 32}", timeout=10
    )
    try:
        first = _send(bin_, b"{}", {"X-Shopify-Webhook-Id": "w-1", "X-Shopify-Hmac-Sha256": "x"})
        second = _send(bin_, b"{}", {"X-Shopify-Webhook-Id": "w-1", "X-Shopify-Hmac-Sha256": "x"})
        frames = [json.loads(ws.recv())["request"] for _ in range(2)]
    finally:
        ws.close()
    assert [f["id"] for f in frames] == [first, second]
    assert frames[0]["signature"]["provider"] == "shopify"
    assert frames[0]["signature"]["status"] == "unchecked"
    assert frames[1]["duplicate_of"] == first
    assert "signing_rev" not in frames[0] and "seq" not in frames[0]


@pytest.mark.parametrize(
    ("headers", "body", "key"),
    [
        ([("X-GitHub-Delivery", "abc")], b"", "github:abc"),
        ([("webhook-id", "msg_1")], b"", "webhook:msg_1"),
        ([("Svix-Id", "msg_2")], b"", "svix:msg_2"),
        ([("Twitch-Eventsub-Message-Id", "t-9")], b"", "twitch:t-9"),
        ([("Stripe-Signature", "t=1")], b'{"id": "evt_9"}', "stripe:evt_9"),
        ([("Stripe-Signature", "t=1")], b"[1, 2]", None),
        ([("Stripe-Signature", "t=1")], b"{not json", None),
        ([("X-Slack-Signature", "v0=1")], b'{"event_id": "Ev1"}', "slack:Ev1"),
        ([("Content-Type", "text/plain")], b"hello", None),
        ([("X-GitHub-Delivery", "   ")], b"", None),
    ],
)
def test_delivery_ids(headers, body, key) -> None:
    assert delivery_of(headers, body).key == key


def test_slack_retries_are_explained() -> None:
    found = delivery_of(
        [("X-Slack-Retry-Num", "2"), ("X-Slack-Retry-Reason", "http_timeout")],
        b'{"event_id": "Ev2"}',
    )
    assert found.key == "slack:Ev2"
    assert found.note == "Slack retry 2 (http_timeout)"
