"""Retention and caps inside one app: the settings, their checks, and purge rounds run directly.

Rounds are run by the test (``PurgeLoop.run_round``) on a real SQLite file, so what each one
deletes is exact; tests/test_retention_server.py covers the loop in real servers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.bins import binsfile
from app.config import Settings, format_duration, parse_duration
from app.core.clock import utcnow
from app.storage.db import attempts, forward_queue, request_bodies, requests
from app.storage.migrate import upgrade
from app.storage.purge import PurgeLease
from app.storage.retention import BATCH
from app.wiring import Services
from tests.conftest import ROOT, TEST_OPERATOR


@dataclass
class App:
    app: Flask
    client: FlaskClient
    services: Services

    def bin(self, **changes: object) -> str:
        bin_id = self.client.post("/api/bins").get_json()["id"]
        if changes:
            assert self.client.patch(f"/api/bins/{bin_id}", json=changes).status_code == 200
        return bin_id

    def capture(self, bin_id: str, n: int) -> list[str]:
        ids = []
        for i in range(n):
            response = self.client.post(f"/h/{bin_id}/{i}", data=b"x" * 100)
            assert response.status_code == 200
            ids.append(response.get_json()["request_id"])
        return ids

    def age(self, bin_id: str, seconds: float) -> None:
        """Make every request of the bin look ``seconds`` old."""
        with self.services.engine.begin() as conn:
            conn.execute(
                sa.update(requests)
                .where(requests.c.bin_id == bin_id)
                .values(received_at=utcnow() - timedelta(seconds=seconds))
            )

    def ids(self, bin_id: str) -> list[str]:
        items = self.services.storage.list_requests(bin_id, limit=100_000)
        return [i["id"] for i in reversed(items)]

    def purge(self) -> int:
        """Run rounds until one says nothing is left; how many requests went."""
        before = self.services.purge.purged_total
        while self.services.purge.run_round():
            pass
        return self.services.purge.purged_total - before


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[object]:
    made: list[App] = []
    url = f"sqlite:///{tmp_path / 'hookbin.sqlite3'}"
    upgrade(url)

    def make(**settings: object) -> App:
        app = create_app(Settings(database_url=url, admin_token=TEST_OPERATOR, **settings))  # type: ignore[arg-type]
        made.append(App(app, app.test_client(), app.extensions["hookbin"]))
        return made[-1]

    yield make
    for a in made:
        a.services.close()


# --- settings -------------------------------------------------------------------------------------


def test_durations_read_and_shown() -> None:
    assert [parse_duration(t) for t in ("0", "90", "90s", "15m", "12h", "30d")] == [
        0,
        90,
        90,
        900,
        43200,
        2592000,
    ]
    for bad in ("", " 1d", "1d ", "1w", "-1", "1.5h", "1D", "d", "1234567890s", "１d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert [format_duration(s) for s in (0, 59, 60, 5400, 86400, 90000)] == [
        "0",
        "59s",
        "1m",
        "90m",
        "1d",
        "25h",
    ]


def test_server_settings_and_their_refusals() -> None:
    settings = Settings.from_env({"HOOKBIN_RETENTION": " 12h ", "HOOKBIN_BIN_MAX_REQUESTS": "0"})
    assert (settings.retention_seconds, settings.bin_max_requests) == (43200, 0)
    assert Settings().retention_seconds == 30 * 86400
    with pytest.raises(ValueError, match="HOOKBIN_RETENTION must be a duration"):
        Settings.from_env({"HOOKBIN_RETENTION": "2 weeks"})
    with pytest.raises(ValueError, match="HOOKBIN_BIN_MAX_REQUESTS must be 0"):
        Settings.from_env({"HOOKBIN_BIN_MAX_REQUESTS": "-5"})
    with pytest.raises(ValueError, match="HOOKBIN_BIN_MAX_REQUESTS"):
        Settings.from_env({"HOOKBIN_BIN_MAX_REQUESTS": "lots"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("HOOKBIN_RETENTION", "30days", "HOOKBIN_RETENTION must be a duration like 90s"),
        ("HOOKBIN_BIN_MAX_REQUESTS", "-1", "HOOKBIN_BIN_MAX_REQUESTS must be 0 (no cap)"),
    ],
)
def test_serve_refuses_to_start_on_a_bad_limit(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    env = {"HOOKBIN_DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}", name: value}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "1"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Hookbin did not start." in result.stderr
    assert "Traceback" not in result.stderr


# --- per-bin settings -----------------------------------------------------------------------------


def test_the_api_sets_shows_and_clears_a_bins_limits(make_app) -> None:  # type: ignore[no-untyped-def]
    a = make_app(retention="7d", bin_max_requests=500)
    bin_id = a.bin()
    shown = a.client.get(f"/api/bins/{bin_id}").get_json()
    assert {k: v for k, v in shown.items() if "retention" in k or "max_requests" in k} == {
        "retention": None,
        "retention_seconds": None,
        "max_requests": None,
        "effective_retention": "7d",
        "effective_retention_seconds": 604800,
        "effective_max_requests": 500,
    }
    changed = a.client.patch(f"/api/bins/{bin_id}", json={"retention": "36h", "max_requests": 0})
    body = changed.get_json()
    assert (body["retention"], body["retention_seconds"], body["effective_retention"]) == (
        "36h",
        129600,
        "36h",
    )
    assert (body["max_requests"], body["effective_max_requests"]) == (0, 0)
    body = a.client.patch(f"/api/bins/{bin_id}", json={"retention": 120}).get_json()
    assert (body["retention"], body["retention_seconds"], body["max_requests"]) == ("2m", 120, 0)
    body = a.client.patch(f"/api/bins/{bin_id}", json={"retention": "0"}).get_json()
    assert (body["retention"], body["effective_retention_seconds"]) == ("0", 0)
    body = a.client.patch(
        f"/api/bins/{bin_id}", json={"retention": None, "max_requests": None}
    ).get_json()
    assert (body["retention"], body["effective_retention"], body["effective_max_requests"]) == (
        None,
        "7d",
        500,
    )


@pytest.mark.parametrize(
    "body",
    [
        {"retention": "5 days"},
        {"retention": "1w"},
        {"retention": -1},
        {"retention": 1.5},
        {"retention": True},
        {"retention": 86399999913601},
        {"retention": ["1d"]},
        {"max_requests": -1},
        {"max_requests": "10"},
        {"max_requests": 2.5},
        {"max_requests": False},
        {"max_requests": 1_000_000_001},
    ],
)
def test_the_api_refuses_bad_limits(make_app, body: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    a = make_app()
    bin_id = a.bin(max_requests=7)
    response = a.client.patch(f"/api/bins/{bin_id}", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(next(iter(body)) + " must be")
    assert a.client.get(f"/api/bins/{bin_id}").get_json()["max_requests"] == 7


def test_the_settings_form_sets_refuses_and_clears_limits(make_app) -> None:  # type: ignore[no-untyped-def]
    a = make_app(retention="30d", bin_max_requests=10000)
    bin_id = a.bin()
    page = a.client.get(f"/bins/{bin_id}").get_data(as_text=True)
    assert 'name="retention"' in page and 'placeholder="30d"' in page
    assert 'placeholder="10000"' in page

    def save(retention: str, cap: str) -> tuple[int, str]:
        response = a.client.post(
            f"/bins/{bin_id}/settings",
            data={"forward_url": "", "retention": retention, "max_requests": cap},
        )
        return response.status_code, response.get_data(as_text=True)

    assert save(" 12h ", "250")[0] == 303
    bin_ = a.client.get(f"/api/bins/{bin_id}").get_json()
    assert (bin_["retention"], bin_["max_requests"]) == ("12h", 250)
    assert 'value="12h"' in a.client.get(f"/bins/{bin_id}").get_data(as_text=True)

    status, page = save("soon", "250")
    assert status == 422
    assert "retention must be a duration" in page and 'value="soon"' in page
    status, page = save("1d", "-3")
    assert status == 422 and "max_requests must be a whole number" in page
    bin_ = a.client.get(f"/api/bins/{bin_id}").get_json()
    assert (bin_["retention"], bin_["max_requests"]) == ("12h", 250)

    assert save("", "")[0] == 303
    bin_ = a.client.get(f"/api/bins/{bin_id}").get_json()
    assert (bin_["retention"], bin_["max_requests"]) == (None, None)


def test_the_bins_file_sets_limits_and_refuses_bad_ones(tmp_path: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bins.toml"
    path.write_text('[bins.short-lived]\nretention = "90m"\nmax_requests = 3\n[bins.plain]\n')
    a = make_app(bins_file=str(path))
    bin_ = a.client.get("/api/bins/short-lived").get_json()
    assert (bin_["retention"], bin_["max_requests"], bin_["managed"]) == ("90m", 3, True)
    plain = a.client.get("/api/bins/plain").get_json()
    assert (plain["retention"], plain["max_requests"]) == (None, None)

    path.write_text("[bins.short-lived]\nretention = 60\n")
    defined = binsfile.read(path, set())
    assert (defined[0].retention_seconds, defined[0].max_requests) == (60, None)
    for bad in ('retention = "3 days"', "max_requests = -1", 'max_requests = "5"'):
        path.write_text(f"[bins.short-lived]\n{bad}\n")
        with pytest.raises(binsfile.BinsFileError, match='bin "short-lived": (retention|max_r)'):
            binsfile.read(path, set())


# --- purge rounds ---------------------------------------------------------------------------------


def test_a_round_trims_bins_to_their_cap_newest_first(make_app) -> None:  # type: ignore[no-untyped-def]
    a = make_app(bin_max_requests=4)
    capped, own, uncapped = a.bin(), a.bin(max_requests=2), a.bin(max_requests=0)
    ids = {b: a.capture(b, 7) for b in (capped, own, uncapped)}
    assert a.purge() == 3 + 5
    assert a.ids(capped) == ids[capped][-4:]
    assert a.ids(own) == ids[own][-2:]
    assert a.ids(uncapped) == ids[uncapped]
    assert a.purge() == 0  # nothing more, and nothing twice


def test_lowering_a_cap_on_an_idle_bin_applies_at_the_next_round(make_app) -> None:  # type: ignore[no-untyped-def]
    a = make_app(bin_max_requests=100)
    bin_id = a.bin()
    ids = a.capture(bin_id, 10)
    assert a.purge() == 0
    a.client.patch(f"/api/bins/{bin_id}", json={"max_requests": 3})
    assert a.purge() == 7
    assert a.ids(bin_id) == ids[-3:]
    a.client.patch(f"/api/bins/{bin_id}", json={"max_requests": None})  # back to 100
    a.capture(bin_id, 2)
    assert a.purge() == 0


def test_the_first_round_of_a_purger_sweeps_every_bin(make_app) -> None:  # type: ignore[no-untyped-def]
    # Requests stored while the cap was higher (or before there was one) are found by the sweep.
    a = make_app(bin_max_requests=0)
    bins = [a.bin() for _ in range(3)]
    for b in bins:
        a.capture(b, 6)
    a.services.close()
    b = make_app(bin_max_requests=5)
    assert b.purge() == 3
    assert all(len(b.ids(x)) == 5 for x in bins)


def test_retention_deletes_old_requests_of_every_bin_by_its_own_setting(make_app) -> None:  # type: ignore[no-untyped-def]
    a = make_app(retention="1h", bin_max_requests=0)
    default, longer, forever, shorter = (
        a.bin(),
        a.bin(retention="1d"),
        a.bin(retention=0),
        a.bin(retention="10m"),
    )
    # The longer bin's old requests come first and fill more than one step of the walk.
    a.capture(longer, BATCH)
    for b in (default, longer, forever, shorter):
        a.capture(b, 3)
        a.age(b, 2 * 3600)
    fresh = {b: a.capture(b, 2) for b in (default, longer, forever, shorter)}
    a.age(shorter, 20 * 60)  # its fresh ones are past its own 10 minutes too
    assert a.purge() == 3 + 5
    assert a.ids(default) == fresh[default]
    assert len(a.ids(longer)) == BATCH + 5 and len(a.ids(forever)) == 5
    assert a.ids(shorter) == []

    # The walk went past the longer bin's old rows; they go once it follows the server again.
    a.client.patch(f"/api/bins/{longer}", json={"retention": None})
    assert a.purge() == BATCH + 3
    assert a.ids(longer) == fresh[longer]


def test_the_walk_stops_at_the_first_request_too_new(make_app) -> None:  # type: ignore[no-untyped-def]
    a = make_app(retention="1h", bin_max_requests=0)
    bin_id = a.bin()
    a.capture(bin_id, 2 * BATCH + 10)
    a.age(bin_id, 2 * 3600)
    kept = a.capture(bin_id, 3)
    assert a.purge() == 2 * BATCH + 10
    assert a.ids(bin_id) == kept
    assert a.purge() == 0
    a.age(bin_id, 2 * 3600)
    assert a.purge() == 3


def test_purged_requests_go_with_bodies_attempts_and_forwards(make_app) -> None:  # type: ignore[no-untyped-def]
    a = make_app(bin_max_requests=1)
    bin_id = a.bin()
    first, second = a.capture(bin_id, 2)
    seq, kept = (a.services.storage.get_request(i)["seq"] for i in (first, second))
    now = utcnow()
    with a.services.engine.begin() as conn:
        for s in (seq, kept):
            conn.execute(
                sa.insert(forward_queue).values(
                    request_seq=s,
                    bin_id=bin_id,
                    url="http://127.0.0.1:9/",
                    state="failed",
                    tries=6,
                    next_at=now,
                    created_at=now,
                )
            )
            conn.execute(
                sa.insert(attempts).values(
                    request_seq=s,
                    kind="replay",
                    method="POST",
                    url="http://127.0.0.1:9/",
                    started_at=now,
                    status=200,
                    response_headers=[],
                    response_body=b"",
                    response_size=0,
                    truncated=False,
                    elapsed_ms=1.0,
                )
            )
    counted: list[int] = []
    a.services.purge.on_purged = counted.append
    assert a.purge() == 1
    assert counted == [1]
    with a.services.engine.connect() as conn:
        for table in (request_bodies, attempts, forward_queue):
            query = sa.select(sa.func.count()).select_from(table)
            column = table.c.request_seq
            assert conn.execute(query.where(column == seq)).scalar() == 0, table.name
            assert conn.execute(query.where(column == kept)).scalar() == 1, table.name
    assert a.ids(bin_id) == [second]
    assert a.client.get(f"/api/requests/{first}").status_code == 404


def test_one_purger_per_database_file(make_app) -> None:  # type: ignore[no-untyped-def]
    first, second = make_app(bin_max_requests=1), make_app(bin_max_requests=1)
    bin_id = first.bin()
    first.capture(bin_id, 3)
    assert first.purge() == 2  # first came first and holds the lease
    second.capture(bin_id, 3)
    assert second.purge() == 0  # while the other holds it, rounds do nothing
    first.services.purge.stop()  # lets go of the lease
    assert second.purge() == 3
    assert len(second.ids(bin_id)) == 1


def test_a_lease_is_held_until_released(tmp_path: Path) -> None:
    engine = sa.create_engine("sqlite://")
    one, two = PurgeLease(engine, tmp_path / "db"), PurgeLease(engine, tmp_path / "db")
    assert one.held() and one.held()
    assert not two.held()
    one.release()
    assert two.held() and not one.held()
