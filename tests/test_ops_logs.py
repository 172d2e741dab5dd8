"""``HOOKBIN_LOG_FORMAT=json``: one JSON object per line, with bin and request ids where known,
and never a secret: signing secrets, admin tokens, Authorization headers."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import httpx
import pytest

from app.ops import logs
from tests.conftest import start_server

SIGNING_SECRET = "whsec_signing-secret-9d7c1e"
ADMIN_TOKEN = "admin-token-5b2f80aa"
SENDER_TOKEN = "sender-bearer-token-77e1c4"
NEW_SECRET = "whsec_new-secret-4a61f0"


def test_json_logs_carry_ids_and_no_secrets(tmp_path: Path, sqlite_url: str) -> None:
    bins_file = tmp_path / "bins.toml"
    bins_file.write_text(
        "[bins.signed-hooks]\n"
        'signing = { provider = "stripe", secrets = ["env:OPS_TEST_SIGNING_SECRET"] }\n',
        encoding="utf-8",
    )
    server = start_server(
        sqlite_url,
        tmp_path,
        workers=2,
        extra_env={
            "HOOKBIN_LOG_FORMAT": "json",
            "HOOKBIN_ACCESS_LOG": "true",
            "HOOKBIN_ADMIN_TOKEN": f"other-token,{ADMIN_TOKEN}",
            "HOOKBIN_BINS_FILE": str(bins_file),
            "OPS_TEST_SIGNING_SECRET": SIGNING_SECRET,
        },
    )
    try:
        sender = {"Authorization": f"Bearer {SENDER_TOKEN}", "Stripe-Signature": "t=1,v1=00"}
        url = f"{server.url}/h/signed-hooks/event"
        assert httpx.post(url, headers=sender, content=b"{}").status_code == 200

        # Through a proxy (not local): the token decides, and a refusal is logged.
        proxied = {"X-Forwarded-For": "198.51.100.7"}
        refused = {**proxied, "Authorization": f"Bearer {ADMIN_TOKEN}x"}
        assert httpx.get(f"{server.url}/metrics", headers=refused).status_code == 401
        allowed = {**proxied, "Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert httpx.get(f"{server.url}/metrics", headers=allowed).status_code == 200

        # A capture whose insert fails is logged with its error, which must not hold the
        # statement's parameters (the headers, the body).
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON requests "
                "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
            )
        assert httpx.post(url, headers=sender, content=SIGNING_SECRET.encode()).status_code == 503
        # So is a failed write of the API: its statement's parameters hold the new secret.
        bin_id = server.create_bin()["id"]
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
            db.execute(
                "CREATE TRIGGER refuse_update BEFORE UPDATE ON bins "
                "BEGIN SELECT RAISE(ABORT, 'update refused for the test'); END"
            )
        signing = {"signing": {"provider": "stripe", "secrets": [NEW_SECRET]}}
        response = httpx.patch(
            f"{server.url}/api/bins/{bin_id}",
            json=signing,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 503  # a database error: try again later
        text = server.log()
    finally:
        server.stop()

    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
    failure = [ln for ln in lines if ln["message"].startswith("could not store a capture")]
    assert len(failure) == 1
    assert failure[0]["bin_id"] == "signed-hooks"
    assert failure[0]["level"] == "ERROR"
    assert "refused for the test" in failure[0]["exception"]
    api_failures = [ln for ln in lines if "update refused" in ln.get("exception", "")]
    [flask_line] = [ln for ln in api_failures if ln["logger"] == "app"]
    assert flask_line["bin_id"] == bin_id
    assert any("refused /metrics" in ln["message"] for ln in lines)
    assert any(ln["logger"] == "gunicorn.access" for ln in lines)
    assert any("signed-hooks" in ln["message"] for ln in lines if ln["logger"] != "gunicorn.access")
    for secret in (SIGNING_SECRET, ADMIN_TOKEN, SENDER_TOKEN, NEW_SECRET):
        assert secret not in text


def test_the_formatter_names_the_bin_and_request() -> None:
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("app.x", logging.WARNING, __file__, 1, "try %s", ("a",), None)
    with logs.bind(bin_id="b1"), logs.bind(request_id="r1"):
        inside = json.loads(formatter.format(record))
    outside = json.loads(formatter.format(record))
    assert inside["message"] == "try a" and inside["level"] == "WARNING"
    assert (inside["bin_id"], inside["request_id"]) == ("b1", "r1")
    assert "bin_id" not in outside and "request_id" not in outside


def test_flask_views_name_the_bin_and_request(tmp_path: Path) -> None:
    from flask import Flask

    app = Flask(__name__)
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("app.web", logging.ERROR, __file__, 1, "boom", (), None)
    seen = {}

    @app.get("/bins/<bin_id>/requests/<request_id>")
    def view(bin_id: str, request_id: str) -> str:
        seen.update(json.loads(formatter.format(record)))
        return ""

    app.test_client().get("/bins/bin-7/requests/req-9")
    assert (seen["bin_id"], seen["request_id"]) == ("bin-7", "req-9")


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="HOOKBIN_LOG_FORMAT"):
        logs.configure("xml")
