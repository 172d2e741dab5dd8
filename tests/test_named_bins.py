"""Stable bins: bins with chosen names, and bins defined by a TOML file (HOOKBIN_BINS_FILE).

Names are created through the API and the page of the app in-process; file bins are created by
real servers as they start (several workers at once), rewritten at each start of the app and
again on a fresh database, and a broken file keeps ``hookbin serve`` from starting at all.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click.testing
import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import cli, reserved_bin_names
from app.bins import binsfile, names
from app.bins.binsfile import BinsFileError, FileBin
from app.rules.validate import validate_responses
from tests.conftest import ROOT, Server, free_port, start_server
from tests.echo import EchoTarget, start_echo

RULE = "3 to 63 characters"


def unique_name(prefix: str = "bin") -> str:
    """A valid name nobody else has taken."""
    return f"{prefix}-{secrets.token_hex(4)}"


def stripe_signature(secret: str, body: bytes) -> str:
    timestamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def slack_headers(secret: str, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": "v0=" + digest.hexdigest()}


def only_request(server: Server, bin_id: str) -> dict:
    response = httpx.get(f"{server.url}/api/bins/{bin_id}/requests", timeout=10)
    assert response.status_code == 200, response.text
    [item] = response.json()["items"]
    return item


def only_request_in(client: FlaskClient, bin_id: str) -> dict:
    [item] = client.get(f"/api/bins/{bin_id}/requests").get_json()["items"]
    return item


@pytest.fixture
def echo() -> Iterator[EchoTarget]:
    target = start_echo()
    yield target
    target.close()


# --- named bins through the API -------------------------------------------------------------------


def test_api_creates_a_named_bin_whose_capture_url_uses_the_name(client: FlaskClient) -> None:
    name = unique_name("stripe-dev")
    response = client.post("/api/bins", json={"name": name})
    assert response.status_code == 201, response.get_data(as_text=True)
    bin_ = response.get_json()
    assert bin_["id"] == name
    assert bin_["capture_url"] == f"http://localhost/h/{name}"
    assert bin_["view_url"].startswith(f"http://localhost/bins/{name}?key=hbk_")
    assert bin_["managed"] is False
    assert client.get(f"/api/bins/{name}").get_json()["id"] == name

    captured = client.post(f"/h/{name}/x?y=1", data=b"hello")
    assert captured.status_code == 200
    item = only_request_in(client, name)
    assert item["id"] == captured.get_json()["request_id"]
    assert (item["bin_id"], item["path"], item["query_string"]) == (name, "/x", "y=1")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"json": {}}, {"json": {"name": None}}, {"json": {"other": 1}}],
    ids=["no body", "empty object", "null name", "no name"],
)
def test_api_without_a_name_still_makes_a_random_id(client: FlaskClient, kwargs: dict) -> None:
    response = client.post("/api/bins", **kwargs)
    assert response.status_code == 201, response.get_data(as_text=True)
    bin_ = response.get_json()
    assert len(bin_["id"]) == 22 and bin_["managed"] is False


def test_api_refuses_a_taken_name_with_409(client: FlaskClient) -> None:
    name = unique_name("taken")
    assert client.post("/api/bins", json={"name": name}).status_code == 201
    client.post(f"/h/{name}", data=b"first")

    again = client.post("/api/bins", json={"name": name})
    assert again.status_code == 409
    assert again.get_json() == {
        "error": f'a bin named "{name}" exists already; choose another name'
    }
    # The first bin is untouched.
    assert only_request_in(client, name)["body_size"] == len(b"first")


@pytest.mark.parametrize(
    "name",
    [
        "ab",  # too short
        "a" * 64,  # too long
        "Stripe-dev",  # capitals
        "-stripe",  # must start alphanumeric
        "stripe-",  # must end alphanumeric
        "stripe_dev",
        "stripe.dev",
        "stripe dev",
        "strïpe",
        "",
        "../etc",
    ],
)
def test_api_refuses_invalid_names_with_the_rule(client: FlaskClient, name: str) -> None:
    response = client.post("/api/bins", json={"name": name})
    assert response.status_code == 400
    message = response.get_json()["error"]
    assert "is not a valid bin name" in message and RULE in message
    assert "starting and ending with a letter or digit" in message


@pytest.mark.parametrize(
    "name", ["api", "bins", "static", "healthz", "admin", "metrics", "openapi", "new", "www"]
)
def test_api_refuses_reserved_names(client: FlaskClient, name: str) -> None:
    response = client.post("/api/bins", json={"name": name})
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(f'"{name}" is reserved')
    assert client.get(f"/api/bins/{name}").status_code == 404


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]", "expected a JSON object body (or no body)"),
        (b"{not json", "expected a JSON object body (or no body)"),
        (b'{"name": 42}', "name must be a string (or null for a random id)"),
    ],
)
def test_api_refuses_malformed_bodies(client: FlaskClient, content: bytes, message: str) -> None:
    response = client.post("/api/bins", data=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json() == {"error": message}


@pytest.mark.parametrize("name", ["abc", "9lives", "a-b", "a--b", "x" * 63, "0" * 22])
def test_names_at_the_edges_of_the_rule_are_accepted(client: FlaskClient, name: str) -> None:
    response = client.post("/api/bins", json={"name": name})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["id"] == name


# --- reserved names follow the routes -------------------------------------------------------------


def test_every_route_prefix_is_reserved_and_a_new_route_reserves_its_own(app: Flask) -> None:
    reserved = names.reserved_names(app.url_map)
    for rule in app.url_map.iter_rules():
        first = rule.rule.lstrip("/").split("/", 1)[0]
        if first and "<" not in first:
            assert first in reserved, rule.rule
    assert {"api", "bins", "static", "healthz", "h"} <= reserved

    # A route added later makes its prefix unavailable without anyone editing a list.
    app.add_url_rule("/status-board/<x>", "board", lambda x: x)
    app.add_url_rule("/team-room", "room", lambda: "")
    client = app.test_client()
    for taken in ("status-board", "team-room"):
        response = client.post("/api/bins", json={"name": taken})
        assert response.status_code == 400, taken
        assert "reserved" in response.get_json()["error"]
    assert client.post("/api/bins", json={"name": "team-room-2"}).status_code == 201


# --- named bins from the page ---------------------------------------------------------------------


def test_index_page_has_the_optional_name_field(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assert 'id="bin-name"' in page and 'name="name"' in page
    assert 'id="bin-name-error"' not in page


def test_page_creates_a_named_bin_and_goes_to_it(client: FlaskClient) -> None:
    name = unique_name("page")
    # Surrounding blanks from a paste are forgiven on the page.
    response = client.post("/bins", data={"name": f"  {name} "})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/bins/{name}"
    page = client.get(f"/bins/{name}").get_data(as_text=True)
    assert f'value="http://localhost/h/{name}"' in page
    assert 'id="managed-note"' not in page


def test_page_without_a_name_makes_a_random_bin(client: FlaskClient) -> None:
    response = client.post("/bins", data={"name": ""})
    assert response.status_code == 303
    bin_id = response.headers["Location"].removeprefix("/bins/")
    assert len(bin_id) == 22


@pytest.mark.parametrize(
    ("typed", "status", "says"),
    [
        ("Bad Name<b>", 400, "is not a valid bin name"),
        ("healthz", 400, "is reserved"),
    ],
)
def test_page_shows_errors_inline_and_keeps_what_was_typed(
    client: FlaskClient, typed: str, status: int, says: str
) -> None:
    response = client.post("/bins", data={"name": typed})
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert 'id="bin-name-error"' in page and 'aria-invalid="true"' in page
    assert f'value="{html.escape(typed)}"' in page
    assert "<b>" not in page.split('id="bin-name-error"', 1)[1]  # escaped, not markup
    error = page.split('id="bin-name-error" role="alert">', 1)[1].split("</p>", 1)[0]
    assert says in html.unescape(error)


def test_page_refuses_a_taken_name_with_409_and_keeps_it(client: FlaskClient) -> None:
    name = unique_name("page-taken")
    assert client.post("/bins", data={"name": name}).status_code == 303
    response = client.post("/bins", data={"name": name})
    assert response.status_code == 409
    assert f'value="{name}"' in response.get_data(as_text=True)
    assert "exists already" in html.unescape(response.get_data(as_text=True))


# --- the bins file --------------------------------------------------------------------------------

STRIPE_SECRET = "whsec_" + "s" * 32
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def write_bins_file(path: Path, forward_url: str, *, with_slack: bool = True) -> Path:
    text = f"""
# Fixed URLs for the team.
[bins.stripe-dev]
forward_url = "{forward_url}"
auto_forward = true
signing = {{ provider = "stripe", secrets = ["env:HOOKBIN_TEST_STRIPE_SECRET"] }}
"""
    if with_slack:
        text += f"""
[bins.slack-events]
[bins.slack-events.signing]
provider = "slack"
secrets = ["{SLACK_SECRET}"]
"""
    path.write_text(text, encoding="utf-8")
    return path


def file_env(path: Path) -> dict[str, str]:
    return {"HOOKBIN_BINS_FILE": str(path), "HOOKBIN_TEST_STRIPE_SECRET": STRIPE_SECRET}


def get_json(server: Server | FlaskClient, path: str) -> dict:
    """GET ``path`` from a real server or an in-process app; the answer's JSON."""
    if isinstance(server, Server):
        return httpx.get(server.url + path, timeout=10).json()
    return server.get(path).get_json()


def shown_signing(provider: str, secret: str) -> dict:
    """A signing setting as the API shows it: never the secret itself."""
    return {"provider": provider, "secrets_set": 1, "secret_hints": ["\u2026" + secret[-4:]]}


def assert_file_bins(server: Server | FlaskClient, forward_url: str) -> None:
    base = server.url if isinstance(server, Server) else "http://localhost"
    stripe = get_json(server, "/api/bins/stripe-dev")
    assert stripe["managed"] is True
    assert stripe["capture_url"] == f"{base}/h/stripe-dev"
    assert stripe["signing"] == shown_signing("stripe", STRIPE_SECRET)
    assert (stripe["forward_url"], stripe["auto_forward"]) == (forward_url, True)
    slack = get_json(server, "/api/bins/slack-events")
    assert slack["managed"] is True
    assert slack["signing"] == shown_signing("slack", SLACK_SECRET)
    assert (slack["forward_url"], slack["auto_forward"]) == (None, False)


def test_bins_file_bins_exist_at_start_with_signing_and_forwarding(
    tmp_path: Path, sqlite_url: str, echo: EchoTarget
) -> None:
    bins_file = write_bins_file(tmp_path / "bins.toml", echo.url + "/hooks")
    srv = start_server(sqlite_url, tmp_path, workers=3, extra_env=file_env(bins_file))
    try:
        assert_file_bins(srv, echo.url + "/hooks")

        body = b'{"id": "evt_1", "type": "charge.succeeded"}'
        good = httpx.post(
            f"{srv.url}/h/stripe-dev/stripe",
            content=body,
            headers={"Stripe-Signature": stripe_signature(STRIPE_SECRET, body)},
        )
        assert good.status_code == 200
        item = only_request(srv, "stripe-dev")
        assert item["signature"]["provider"] == "stripe"
        assert item["signature"]["status"] == "valid", item["signature"]

        # Auto-forward from the file: the request reaches the target with its sub-path.
        [forwarded] = echo.wait_for(1)
        assert (forwarded.path, forwarded.body) == ("/hooks/stripe", body)

        slack_body = b"token=x&team_id=T1"
        httpx.post(
            f"{srv.url}/h/slack-events",
            content=slack_body,
            headers=slack_headers(SLACK_SECRET, slack_body),
        )
        forged = slack_headers("not-the-secret", slack_body)
        httpx.post(f"{srv.url}/h/slack-events", content=slack_body, headers=forged)
        items = httpx.get(f"{srv.url}/api/bins/slack-events/requests").json()["items"]
        assert [i["signature"]["status"] for i in items] == ["invalid", "valid"]

        page = httpx.get(f"{srv.url}/bins/stripe-dev").text
        assert 'id="managed-note"' in page
        assert "Defined in <code>bins.toml</code>" in page
        assert str(tmp_path) not in page  # the file's name only, not where it lives

        # Three workers applied the file at once; none of them failed.
        assert srv.process.poll() is None
        assert "Exception in worker process" not in srv.log()
    finally:
        srv.close()


def test_restart_rewrites_settings_and_a_fresh_database_gets_the_same_urls(
    tmp_path: Path, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each start is an app built on the file, as each worker of ``hookbin serve`` builds one.
    forward = "http://127.0.0.1:9/hooks"
    bins_file = write_bins_file(tmp_path / "bins.toml", forward)
    monkeypatch.setenv("HOOKBIN_TEST_STRIPE_SECRET", STRIPE_SECRET)

    first = make_app(bins_file=str(bins_file))
    database = first.config["HOOKBIN"].database_url
    client = first.test_client()
    before = {b: get_json(client, f"/api/bins/{b}") for b in ("stripe-dev", "slack-events")}
    client.post("/h/stripe-dev/kept", data=b"kept")
    # Changed by hand on a managed bin: allowed, until the next start.
    changed = client.patch(
        "/api/bins/stripe-dev",
        json={
            "forward_url": "http://127.0.0.1:9/elsewhere",
            "auto_forward": False,
            "signing": None,
        },
    ).get_json()
    assert (changed["forward_url"], changed["auto_forward"], changed["signing"]) == (
        "http://127.0.0.1:9/elsewhere",
        False,
        None,
    )

    # Restart on the same database: the file's settings are back, what was caught stays.
    client = make_app(database, bins_file=str(bins_file)).test_client()
    assert_file_bins(client, forward)
    assert only_request_in(client, "stripe-dev")["path"] == "/kept"

    # A fresh database: the same bins come back at the same URLs, empty.
    client = make_app(bins_file=str(bins_file)).test_client()
    assert_file_bins(client, forward)
    for name, old in before.items():
        now = get_json(client, f"/api/bins/{name}")
        # The page's address stays; its key is the new database's own.
        assert now["capture_url"] == old["capture_url"]
        assert now["view_url"].split("?")[0] == old["view_url"].split("?")[0]
        assert get_json(client, f"/api/bins/{name}/requests")["items"] == []
    assert client.post("/h/slack-events/again").status_code == 200


def test_bins_that_leave_the_file_stay_but_are_no_longer_managed(
    tmp_path: Path, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    bins_file = write_bins_file(tmp_path / "bins.toml", "http://127.0.0.1:9/")
    monkeypatch.setenv("HOOKBIN_TEST_STRIPE_SECRET", STRIPE_SECRET)
    first = make_app(bins_file=str(bins_file))
    first.test_client().post("/h/slack-events/x", data=b"still here")

    write_bins_file(bins_file, "http://127.0.0.1:9/", with_slack=False)
    client = make_app(first.config["HOOKBIN"].database_url, bins_file=str(bins_file)).test_client()
    slack = get_json(client, "/api/bins/slack-events")
    assert slack["managed"] is False
    # Its settings are left as they were; only the file no longer rewrites them.
    assert slack["signing"] == shown_signing("slack", SLACK_SECRET)
    assert only_request_in(client, "slack-events")["path"] == "/x"
    assert 'id="managed-note"' not in client.get("/bins/slack-events").get_data(as_text=True)
    assert get_json(client, "/api/bins/stripe-dev")["managed"] is True


BROKEN_FILES = [
    ("[bins.api]\n", "api", '"api" is reserved'),
    ("[bins.Stripe]\n", "Stripe", "is not a valid bin name: use 3 to 63 characters"),
    (
        '[bins.stripe-dev]\nsigning = { provider = "stripy", secrets = [] }\n',
        "stripe-dev",
        "signing.provider must be one of auto, github, stripe",
    ),
    (
        "[bins.stripe-dev]\n"
        'signing = { provider = "stripe", secrets = ["env:HOOKBIN_NOT_SET_X"] }\n',
        "stripe-dev",
        "signing secret #1: environment variable HOOKBIN_NOT_SET_X is not set",
    ),
    (
        "[bins.stripe-dev]\nauto_forward = true\n",
        "stripe-dev",
        "auto_forward = true needs a forward_url",
    ),
    ('[bins.stripe-dev]\nforward_to = "http://x"\n', "stripe-dev", "unknown key forward_to"),
    (
        '[bins.stripe-dev]\nforward_url = "localhost:3000"\n',
        "stripe-dev",
        "forward_url must be an http",
    ),
    # urlsplit raises ValueError on an unclosed IPv6 bracket: this used to be a traceback.
    ('[bins.stripe-dev]\nforward_url = "http://[::1:3000/"\n', "stripe-dev", "forward_url"),
    ('[bins.stripe-dev]\nforward_url = "http://a/\\u0000"\n', "stripe-dev", "forward_url"),
    (
        '[bins.stripe-dev]\nresponses = { default = { body = "{{ '
        + "(" * 300
        + "1"
        + ")" * 300
        + ' }}" } }\n',
        "stripe-dev",
        "default.body: template error: expressions are nested too deeply",
    ),
]


def _serve(env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOOKBIN_DATABASE_URL": f"sqlite:///{tmp_path / 'refused.sqlite3'}",
        "HOOKBIN_ACCESS_LOG": "false",
        **env_extra,
    }
    env.pop("HOOKBIN_NOT_SET_X", None)
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Nothing may be listening: the server refused to start rather than starting without bins.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    return result


def _serve_in_process(
    bins_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> click.testing.Result:
    """``hookbin serve`` run by click in this process, where gunicorn cannot be started: the
    refusals are the command's own (the process around them is ``_serve``'s business)."""

    def no_gunicorn(*_args: object) -> None:
        raise AssertionError("hookbin serve went on to start gunicorn")

    monkeypatch.setattr(os, "execv", no_gunicorn)
    env = {
        "HOOKBIN_DATABASE_URL": f"sqlite:///{tmp_path / 'refused.sqlite3'}",
        "HOOKBIN_BINS_FILE": str(bins_file),
        # Set by the command; unset, and restored, around it.
        "HOOKBIN_LISTEN_PORT": None,
        "HOOKBIN_NOT_SET_X": None,
    }
    return click.testing.CliRunner().invoke(
        cli.main, ["serve", "--port", str(free_port()), "--workers", "1"], env=env
    )


@pytest.mark.parametrize(("text", "bin_name", "problem"), BROKEN_FILES)
def test_a_broken_bins_file_keeps_the_server_from_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, bin_name: str, problem: str
) -> None:
    bins_file = tmp_path / "team-bins.toml"
    bins_file.write_text(text, encoding="utf-8")
    result = _serve_in_process(bins_file, tmp_path, monkeypatch)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no other exception
    assert f'bins file {bins_file}: bin "{bin_name}": ' in result.stderr
    assert problem in result.stderr
    assert "Hookbin did not start." in result.stderr
    assert not (tmp_path / "refused.sqlite3").exists()  # refused before touching the database


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[bins.ok-name\n", "is not valid TOML: "),
        ('title = "x"\n', "unknown top-level key title"),
        ('bins = "x"\n', "bins must be a table"),
        # tomllib recurses per level: RecursionError, not TOMLDecodeError.
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "is not valid TOML: nested too deeply"),
    ],
)
def test_a_bins_file_that_is_not_a_bins_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, problem: str
) -> None:
    bins_file = tmp_path / "bins.toml"
    bins_file.write_text(text, encoding="utf-8")
    result = _serve_in_process(bins_file, tmp_path, monkeypatch)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"bins file {bins_file}: {problem}" in result.stderr
    assert not (tmp_path / "refused.sqlite3").exists()


def test_a_missing_bins_file_is_refused(tmp_path: Path) -> None:
    # A real process: it exits with 1, says why without a traceback, and listens nowhere.
    result = _serve({"HOOKBIN_BINS_FILE": str(tmp_path / "nope.toml")}, tmp_path)
    assert result.returncode == 1
    assert f"bins file {tmp_path / 'nope.toml'}: cannot be read" in result.stderr
    assert "Hookbin did not start." in result.stderr
    assert "Traceback" not in result.stderr


def test_create_app_refuses_a_broken_file_too(tmp_path: Path) -> None:
    """Started without ``hookbin serve`` (e.g. ``gunicorn app.wsgi:app``), the app still refuses."""
    from app import create_app
    from app.config import Settings
    from app.storage.migrate import upgrade

    url = f"sqlite:///{tmp_path}/x.sqlite3"
    upgrade(url)
    bins_file = tmp_path / "bins.toml"
    bins_file.write_text("[bins.static]\n", encoding="utf-8")
    with pytest.raises(BinsFileError) as caught:
        create_app(Settings(database_url=url, bins_file=str(bins_file)))
    assert str(caught.value).startswith(
        f'bins file {bins_file}: bin "static": "static" is reserved'
    )


def test_bins_check_command(tmp_path: Path) -> None:
    good = write_bins_file(tmp_path / "good.toml", "http://localhost:3000/")
    env = {**os.environ, "HOOKBIN_TEST_STRIPE_SECRET": STRIPE_SECRET}
    ok = subprocess.run(
        [sys.executable, "-m", "app.cli", "bins", "check", str(good)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"bins file {good}: 2 bins (stripe-dev, slack-events): OK"

    env.pop("HOOKBIN_TEST_STRIPE_SECRET")
    missing = subprocess.run(
        [sys.executable, "-m", "app.cli", "bins", "check", str(good)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f'Error: bins file {good}: bin "stripe-dev": signing secret #1: '
        "environment variable HOOKBIN_TEST_STRIPE_SECRET is not set"
    )


def test_env_secrets_are_read_and_never_echoed(tmp_path: Path) -> None:
    bins_file = tmp_path / "bins.toml"
    bins_file.write_text(
        "[bins.team-hooks]\n"
        'signing = { provider = "github", secrets = ["env:GH_ONE", "literal", "env:GH_TWO"] }\n',
        encoding="utf-8",
    )
    [defined] = binsfile.read(bins_file, names.FIXED_RESERVED, {"GH_ONE": "one", "GH_TWO": "two"})
    assert defined.signing == {"provider": "github", "secrets": ["one", "literal", "two"]}
    with pytest.raises(BinsFileError) as caught:
        binsfile.read(bins_file, names.FIXED_RESERVED, {"GH_ONE": "one", "GH_TWO": "  "})
    assert str(caught.value).endswith("signing secret #3: environment variable GH_TWO is empty")
    bins_file.write_text(
        '[bins.team-hooks]\nsigning = { secrets = ["env:not a name"] }\n', encoding="utf-8"
    )
    with pytest.raises(BinsFileError, match='"env:not a name" does not name an environment'):
        binsfile.read(bins_file, names.FIXED_RESERVED, {})


def test_an_env_secret_that_is_not_text_is_refused_without_echoing_it(tmp_path: Path) -> None:
    # os.environ hands undecodable bytes over as lone surrogates; stored, such a secret made the
    # bin's page fail with a 500.
    bins_file = tmp_path / "bins.toml"
    bins_file.write_text(
        '[bins.team-hooks]\nsigning = { provider = "github", secrets = ["env:GH_ONE"] }\n',
        encoding="utf-8",
    )
    with pytest.raises(BinsFileError) as caught:
        binsfile.read(bins_file, names.FIXED_RESERVED, {"GH_ONE": "top-secret-\udcff"})
    assert "unpaired surrogates" in str(caught.value)
    assert "top-secret" not in str(caught.value)


def test_responses_in_the_bins_file_are_checked_by_the_answers_module(tmp_path: Path) -> None:
    bins_file = tmp_path / "bins.toml"
    bins_file.write_text("[bins.answering]\nresponses = 5\n", encoding="utf-8")
    with pytest.raises(BinsFileError) as caught:
        binsfile.read(bins_file, names.FIXED_RESERVED, {})
    assert str(caught.value).startswith(f'bins file {bins_file}: bin "answering": responses')

    bins_file.write_text(
        """
[bins.answering.responses]
default = { status = 202, body = "queued" }

[[bins.answering.responses.rules]]
path = "/flaky/*"
fail_first = { count = 2, status = 503 }

[[bins.answering.responses.rules]]
id = "named"
path = "/named"
answer = { status = 204 }
""",
        encoding="utf-8",
    )
    [first] = binsfile.read(bins_file, names.FIXED_RESERVED, {})
    [again] = binsfile.read(bins_file, names.FIXED_RESERVED, {})
    assert first.responses is not None
    # Stored exactly as the answers module would store it, with ids that do not change between
    # starts (they key the rules' hit counters).
    assert first.responses == again.responses
    assert [r["id"] for r in first.responses["rules"]] == ["rule-1", "named"]
    expected = validate_responses(
        {
            "default": {"status": 202, "body": "queued"},
            "rules": [
                {"id": "rule-1", "path": "/flaky/*", "fail_first": {"count": 2, "status": 503}},
                {"id": "named", "path": "/named", "answer": {"status": 204}},
            ],
        }
    )
    assert first.responses == expected


def test_bins_file_responses_answer_on_the_capture_url(
    tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    bins_file = tmp_path / "bins.toml"
    bins_file.write_text(
        """
[bins.answering.responses]
default = { status = 202, content_type = "text/plain", body = "queued" }
""",
        encoding="utf-8",
    )
    client = make_app(bins_file=str(bins_file)).test_client()
    assert get_json(client, "/api/bins/answering")["managed"] is True
    answered = client.post("/h/answering/x", data=b"{}")
    assert (answered.status_code, answered.get_data(as_text=True)) == (202, "queued")


def test_documented_example_is_a_valid_bins_file(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "bins-file.md").read_text(encoding="utf-8")
    section = page.split("## The bins file", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    bins_file = tmp_path / "bins.toml"
    bins_file.write_text(example, encoding="utf-8")
    env = {
        "STRIPE_WEBHOOK_SECRET": "whsec_a",
        "SLACK_SIGNING_SECRET": "new",
        "SLACK_SIGNING_SECRET_PREVIOUS": "old",
    }
    stripe, slack = binsfile.read(bins_file, reserved_bin_names(), env)
    assert (stripe.name, stripe.auto_forward, stripe.signing) == (
        "stripe-dev",
        True,
        {"provider": "stripe", "secrets": ["whsec_a"]},
    )
    assert slack.signing == {"provider": "slack", "secrets": ["new", "old"]}
    assert slack.responses is not None
    assert [r["id"] for r in slack.responses["rules"]] == ["url-verification"]


# --- several processes applying the file at once -----------------------------------------------


def _sync_concurrently(database_url: str, defined: list[FileBin], copies: int = 6) -> None:
    """Apply ``defined`` from ``copies`` engines (as separate workers would), all at once."""
    from app.storage.db import make_engine

    engines = [make_engine(database_url) for _ in range(copies)]
    start = threading.Barrier(copies)
    errors: list[BaseException] = []

    def run(engine) -> None:
        start.wait()
        try:
            binsfile.sync(engine, defined)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for engine in engines:
        engine.dispose()
    assert not errors, errors


def check_concurrent_sync(database_url: str) -> None:
    from app.storage import store
    from app.storage.db import make_engine

    engine = make_engine(database_url)
    try:
        # A bin a user made by hand with a name the file now claims: adopted, not duplicated.
        store.create_bin(engine, "adopted")
        store.update_bin(engine, "adopted", forward_url="http://127.0.0.1:9/by-hand")
        defined = [
            FileBin(
                "stripe-dev", "http://127.0.0.1:9/s", True, {"provider": "stripe", "secrets": ["a"]}
            ),
            FileBin("slack-events", signing={"provider": "slack", "secrets": ["b"]}),
            FileBin("adopted"),
        ]
        _sync_concurrently(database_url, defined)
        stripe = store.get_bin(engine, "stripe-dev")
        assert stripe is not None and stripe["managed"] and stripe["auto_forward"]
        assert stripe["signing"] == {"provider": "stripe", "secrets": ["a"]}
        assert stripe["signing_rev"] == 0
        adopted = store.get_bin(engine, "adopted")
        assert adopted is not None and adopted["managed"] and adopted["forward_url"] is None

        # A new secret in the file: every stored verdict must be re-checked, exactly once over.
        changed = [
            FileBin(
                "stripe-dev", "http://127.0.0.1:9/s", True, {"provider": "stripe", "secrets": ["c"]}
            ),
            FileBin("slack-events", signing={"provider": "slack", "secrets": ["b"]}),
        ]
        _sync_concurrently(database_url, changed)
        stripe = store.get_bin(engine, "stripe-dev")
        assert stripe is not None and stripe["signing"]["secrets"] == ["c"]
        assert stripe["signing_rev"] == 1
        assert store.get_bin(engine, "slack-events")["signing_rev"] == 0  # type: ignore[index]
        released = store.get_bin(engine, "adopted")
        assert released is not None and released["managed"] is False

        # Applying the same file again changes nothing.
        assert binsfile.sync(engine, changed) == binsfile.SyncReport()
    finally:
        engine.dispose()


def test_concurrent_starts_apply_the_file_once_on_sqlite(sqlite_url: str) -> None:
    from app.storage.migrate import upgrade

    upgrade(sqlite_url)
    check_concurrent_sync(sqlite_url)


@pytest.mark.postgres
def test_concurrent_starts_apply_the_file_once_on_postgres(postgres_url: str) -> None:
    check_concurrent_sync(postgres_url)


@pytest.mark.postgres
def test_bins_file_on_postgres_with_several_workers(postgres_url: str, tmp_path: Path) -> None:
    bins_file = write_bins_file(tmp_path / "bins.toml", "http://127.0.0.1:9/pg")
    srv = start_server(postgres_url, tmp_path, workers=3, extra_env=file_env(bins_file))
    try:
        assert_file_bins(srv, "http://127.0.0.1:9/pg")
        body = b'{"id": "evt_pg"}'
        response = httpx.post(
            f"{srv.url}/h/stripe-dev",
            content=body,
            headers={"Stripe-Signature": stripe_signature(STRIPE_SECRET, body)},
        )
        assert response.status_code == 200
        assert only_request(srv, "stripe-dev")["signature"]["status"] == "valid"
        assert srv.process.poll() is None
        assert "Exception in worker process" not in srv.log()
    finally:
        srv.close()


def test_a_missing_bin_gets_a_page_that_says_so(client: FlaskClient) -> None:
    response = client.get("/bins/stripe-dev")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "No bin called <code>stripe-dev</code>" in page
    assert 'href="/"' in page  # a way on: create one
    # The address is the visitor's own input: shown as text, never as markup.
    hostile = client.get("/bins/%3Cimg%20src=x%20onerror=alert(1)%3E").get_data(as_text=True)
    assert "<img" not in hostile and "&lt;img src=x onerror=alert(1)&gt;" in hostile
    # Programs keep getting JSON.
    assert client.get("/api/no-such-route").get_json() == {"error": "not found"}
    assert client.get("/api/bins/nope").status_code == 404
