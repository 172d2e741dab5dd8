"""Verdicts shown after the bin's secrets change are re-checked as of each request's arrival.

A Stripe signature carries a timestamp that must be fresh when the delivery arrives. A request
captured an hour ago, judged again now, must not turn stale just because time has passed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.config import Settings
from app.signing.recheck import with_verdicts
from app.signing.sign import sign
from app.storage import captures
from app.storage.db import make_engine
from app.storage.migrate import upgrade
from app.storage.repository import Storage
from app.storage.writes import SerialWrites

BODY = b'{"id":"evt_1","type":"invoice.paid"}'


def _storage(tmp_path: Path) -> tuple[Storage, Settings]:
    url = f"sqlite:///{tmp_path / 'hookbin.sqlite3'}"
    upgrade(url)
    settings = Settings(database_url=url)
    return Storage(make_engine(url), SerialWrites(settings, make_engine(url))), settings


def _captured(storage: Storage, bin_id: str, arrived: datetime, headers: list) -> dict:
    capture = captures.Capture(
        bin_id=bin_id,
        method="POST",
        path="/",
        query_string="",
        headers=headers,
        header_source="wire",
        content_type="application/json",
        body=BODY,
        remote_addr="127.0.0.1",
        received_at=arrived,
        signature={"provider": "stripe", "status": "unchecked", "reason": "no secret yet"},
        signing_rev=0,
    )
    (stored,) = storage.write(captures.insert_captures, [capture])
    return storage.get_request(stored.id)


def test_a_recheck_judges_freshness_at_arrival_not_now(tmp_path: Path) -> None:
    storage, settings = _storage(tmp_path)
    bin_id = storage.create_bin()["id"]
    arrived = datetime.now(UTC) - timedelta(hours=1)
    headers = [("Content-Type", "application/json")]
    headers += sign("stripe", "whsec_test", body=BODY, now=arrived.timestamp(), headers=headers)
    item = _captured(storage, bin_id, arrived, headers)

    bin_ = storage.update_bin(bin_id, signing={"provider": "stripe", "secrets": ["whsec_test"]})
    (checked,) = with_verdicts(storage, settings, bin_, [item])
    assert checked["signature"]["status"] == "valid", checked["signature"]
    # Saved under the new revision, so the next read does not judge it again.
    again = storage.get_request(item["id"])
    assert again["signing_rev"] == bin_["signing_rev"]
    assert again["signature"]["status"] == "valid"


def test_a_delivery_stale_at_arrival_stays_stale(tmp_path: Path) -> None:
    storage, settings = _storage(tmp_path)
    bin_id = storage.create_bin()["id"]
    arrived = datetime.now(UTC)
    signed_at = time.time() - 3600  # an hour older than its arrival: a replayed old delivery
    headers = [("Content-Type", "application/json")]
    headers += sign("stripe", "whsec_test", body=BODY, now=signed_at, headers=headers)
    item = _captured(storage, bin_id, arrived, headers)

    bin_ = storage.update_bin(bin_id, signing={"provider": "stripe", "secrets": ["whsec_test"]})
    (checked,) = with_verdicts(storage, settings, bin_, [item])
    assert checked["signature"]["status"] == "invalid"
    assert "old" in checked["signature"]["reason"] or "stale" in checked["signature"]["reason"]
