"""Who may scrape ``/metrics``: loopback freely, anyone else only with an admin token.

In-process through Flask's test client: ``environ_base`` sets the peer address a request came
from, as gunicorn does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.config import Settings
from app.storage.migrate import upgrade

OUTSIDE = {"REMOTE_ADDR": "203.0.113.9"}


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    url = f"sqlite:///{tmp_path / 'ops.sqlite3'}"
    upgrade(url)
    made: list[Flask] = []

    def make(**settings: object) -> Flask:
        app = create_app(Settings(database_url=url, **settings))  # type: ignore[arg-type]
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["hookbin"].close()


def test_loopback_scrapes_without_a_token(make_app: Callable[..., Flask]) -> None:
    client = make_app(admin_token="s3cret-token").test_client()
    for address in ("127.0.0.1", "127.8.0.1", "::1", "::ffff:127.0.0.1"):
        response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
        assert response.status_code == 200, address
        assert response.content_type.startswith("text/plain")
        assert "hookbin_captures_total" in response.text


def test_elsewhere_without_a_configured_token_is_refused(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    for headers in ({}, {"Authorization": "Bearer anything"}):
        response = client.get("/metrics", environ_base=OUTSIDE, headers=headers)
        assert response.status_code == 401
        assert "HOOKBIN_ADMIN_TOKEN" in response.get_json()["error"]
        assert "hookbin_" not in response.text


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong", 401),
        ("Bearer first-token-but-longer", 401),
        ("Basic Zmlyc3QtdG9rZW46", 401),
        ("Bearer", 401),
        ("Bearer first-token", 200),
        ("bearer   second-token ", 200),
    ],
)
def test_elsewhere_needs_one_of_the_admin_tokens(
    make_app: Callable[..., Flask], authorization: str | None, status: int
) -> None:
    client = make_app(admin_token=" first-token , second-token").test_client()
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.get("/metrics", environ_base=OUTSIDE, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.get_json()["error"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    else:
        assert "hookbin_captures_total" in response.text


def test_loopback_through_an_untrusted_proxy_is_not_local(
    make_app: Callable[..., Flask],
) -> None:
    # A reverse proxy on this host connects from 127.0.0.1 on behalf of anyone.
    client = make_app(admin_token="tok").test_client()
    proxied = {"X-Forwarded-For": "198.51.100.7"}
    assert client.get("/metrics", headers=proxied).status_code == 401
    authorized = {**proxied, "Authorization": "Bearer tok"}
    assert client.get("/metrics", headers=authorized).status_code == 200
    # With the proxy trusted, the client's own address decides.
    trusted = make_app(proxy_hops=1).test_client()
    assert trusted.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200
    assert trusted.get("/metrics", headers=proxied).status_code == 401


def test_the_admin_token_is_not_in_the_settings_repr() -> None:
    assert "tok-123" not in repr(Settings(database_url="sqlite://", admin_token="tok-123"))
    assert Settings(admin_token="a, ,b").admin_tokens == ("a", "b")


def _captures(client: object, status: str) -> float:
    text = client.get("/metrics").text  # type: ignore[attr-defined]
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "hookbin_captures_total" and s.labels == {"status": status}:
                return s.value
    return 0.0


def test_a_capture_answered_503_is_counted_as_503(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    client = app.test_client()
    bin_id = client.post("/api/bins").get_json()["id"]
    before_503, before_200 = _captures(client, "503"), _captures(client, "200")

    def broken(_row: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(app.extensions["hookbin"].batcher, "submit", broken)
    assert client.post(f"/h/{bin_id}/x", data=b"x").status_code == 503
    assert _captures(client, "503") == before_503 + 1
    assert _captures(client, "200") == before_200


def test_purged_requests_are_counted(make_app: Callable[..., Flask]) -> None:
    from app.ops import metrics

    client = make_app().test_client()

    def purged() -> float:
        for family in text_string_to_metric_families(client.get("/metrics").text):
            for s in family.samples:
                if s.name == "hookbin_purged_requests_total":
                    return s.value
        raise AssertionError("hookbin_purged_requests_total is missing")

    before = purged()
    metrics.count_purged(3)
    metrics.count_purged(0)
    assert purged() == before + 3
