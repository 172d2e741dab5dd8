"""Rate limits and sender lists as plain parts: rates, the limiter shared by several processes
(simulated by several limiters over one count), the shared count on a real database, and sender
lists with the checks the page, the API and the bins file share."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from app.bins.settings import Invalid, changes_from_form, changes_from_json
from app.limits import senders
from app.limits.counts import add_hits, count_of
from app.limits.limiter import Limiter
from app.limits.policy import source_key
from app.limits.rates import Rate, parse_rate
from app.storage.db import make_engine, rate_counters
from app.storage.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SharedCount:
    """The shared table as a dict, counting how often processes wrote to it."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str, int], int] = {}
        self.writes = 0

    def __call__(self, scope: str, key: str, window: int, hits: int, _sweep: int | None) -> int:
        self.writes += 1
        self.totals[scope, key, window] = self.totals.get((scope, key, window), 0) + hits
        return self.totals[scope, key, window]


# --- rates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [("20/s", Rate(20, 1)), ("30/min", Rate(30, 60)), (" 5 / MIN ", Rate(5, 60)), ("0", None)],
)
def test_rates_are_read_per_second_or_minute(text: str, rate: Rate | None) -> None:
    assert parse_rate(text, "HOOKBIN_X") == rate


@pytest.mark.parametrize("text", ["20", "20/h", "0/s", "-1/s", "x/min", "20/s/s"])
def test_unreadable_rates_name_the_variable(text: str) -> None:
    with pytest.raises(ValueError, match="HOOKBIN_BIN_RATE_LIMIT"):
        parse_rate(text, "HOOKBIN_BIN_RATE_LIMIT")


def test_windows_sit_on_the_clock_and_retry_after_counts_to_their_end() -> None:
    minute = Rate(10, 60)
    assert minute.window(999_999_979.5) == 999_999_960  # a multiple of 60
    assert minute.retry_after(999_999_979.5) == 41
    assert Rate(10, 1).retry_after(1_000_000_019.99) == 1


# --- one process ----------------------------------------------------------------------------------


def test_one_process_admits_exactly_the_limit_per_window() -> None:
    clock, shared = Clock(1_000_000_000.25), SharedCount()
    limiter = Limiter("bin", Rate(50, 1), shared, clock)
    answers = [limiter.hit("b") for _ in range(80)]
    assert answers.count(None) == 50
    assert set(answers[50:]) == {1}
    writes = shared.writes
    assert [limiter.hit("b") for _ in range(100)] == [1] * 100
    assert shared.writes == writes, "refusals in a full window must not touch the database"
    clock.now += 1  # the next window starts afresh
    assert [limiter.hit("b") for _ in range(50)] == [None] * 50
    assert limiter.hit("b") == 1


def test_keys_are_counted_apart() -> None:
    limiter = Limiter("source", Rate(3, 60), SharedCount(), Clock(999_999_960.0))
    assert [limiter.hit("a") for _ in range(4)] == [None, None, None, 60]
    assert limiter.hit("b") is None


def test_shared_writes_stay_far_below_one_per_hit() -> None:
    shared = SharedCount()
    limiter = Limiter("bin", Rate(1000, 1), shared, Clock(1_000_000_000.0))
    assert [limiter.hit("b") for _ in range(1000)] == [None] * 1000
    # One write per chunk (a twentieth of the limit), and per hit only when close to the limit.
    assert shared.writes <= 20 + Rate(1000, 1).chunk
    assert limiter.hit("b") == 1


def test_a_quiet_key_never_reaches_the_database() -> None:
    shared = SharedCount()
    limiter = Limiter("source", Rate(600, 60), shared, Clock(1_000_000_000.0))
    for _ in range(Rate(600, 60).chunk - 1):
        assert limiter.hit("203.0.113.9") is None
    assert shared.writes == 0


def test_a_count_that_cannot_be_written_refuses_nobody() -> None:
    def broken(*_args: object) -> int:
        raise sa.exc.OperationalError("UPSERT", {}, Exception("database is locked"))

    limiter = Limiter("bin", Rate(2, 1), broken, Clock(1_000_000_000.0))
    assert [limiter.hit("b") for _ in range(5)] == [None] * 5


def test_hits_far_from_the_limit_do_not_wait_for_a_share_in_flight() -> None:
    entered, release = threading.Event(), threading.Event()
    sent: list[int] = []

    def slow(_scope: str, _key: str, _window: int, hits: int, _sweep: int | None) -> int:
        sent.append(hits)
        entered.set()
        assert release.wait(10)
        return sum(sent)

    limiter = Limiter("bin", Rate(100, 1), slow, Clock(1_000_000_000.0))  # chunks of 5
    sharing = threading.Thread(target=lambda: [limiter.hit("b") for _ in range(5)])
    sharing.start()
    assert entered.wait(10)
    # Meanwhile this process keeps counting by itself, without waiting.
    assert [limiter.hit("b") for _ in range(4)] == [None] * 4
    release.set()
    sharing.join()
    assert limiter.hit("b") is None  # the next share carries the four and this one
    assert sent == [5, 5]


# --- several processes over one count -------------------------------------------------------------


@pytest.mark.parametrize(("limit", "processes"), [(20, 2), (40, 2), (100, 4), (1000, 3)])
def test_processes_together_admit_the_limit_within_the_stated_tolerance(
    limit: int, processes: int
) -> None:
    rate = Rate(limit, 1)
    for seed in range(20):
        chooser = random.Random(seed)
        clock, shared = Clock(1_000_000_000.5), SharedCount()
        limiters = [Limiter("bin", rate, shared, clock) for _ in range(processes)]
        admitted = 0
        for _ in range(3 * limit):
            if limiters[chooser.randrange(processes)].hit("b") is None:
                admitted += 1
            else:
                # Refused only once the limit's worth of hits was really admitted.
                assert admitted >= limit
        # Shares that land at once: at most N + P x (chunk - 1), exactly N when the chunk is 1
        # (docs/limits.md allows as many again for shares still in flight).
        assert limit <= admitted <= limit + processes * (rate.chunk - 1)


# --- the shared count on a real database ----------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'limits.sqlite3'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("postgres_url")
    made = make_engine(url)
    yield made
    made.dispose()


def test_the_shared_count_adds_up_and_drops_windows_that_are_over(engine: sa.Engine) -> None:
    assert add_hits(engine, "bin", "b", 1000, 3) == 3
    assert add_hits(engine, "bin", "b", 1000, 4) == 7
    assert add_hits(engine, "bin", "other", 1000, 1) == 1
    assert add_hits(engine, "source", "b", 1000, 2) == 2
    assert count_of(engine, "bin", "b", 1000) == 7
    # A key's next window deletes its earlier rows, and only that key's.
    assert add_hits(engine, "bin", "b", 1001, 1) == 1
    assert count_of(engine, "bin", "b", 1000) == 0
    assert count_of(engine, "bin", "other", 1000) == 1
    # The sweep deletes every row whose window is over, of any key.
    add_hits(engine, "create", "x", 2000, 1, sweep_before=1500)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(rate_counters.c.scope, rate_counters.c.window)).all()
    assert sorted(rows) == [("create", 2000)]


# --- sender lists ---------------------------------------------------------------------------------


def test_sender_lists_are_stored_canonical() -> None:
    given = ["203.0.113.7/24", "2001:DB8::1", "10.0.0.1/32", "203.0.113.0/24", "::/0"]
    assert senders.parse_senders(given) == ["203.0.113.0/24", "2001:db8::1", "10.0.0.1", "::/0"]
    assert senders.parse_senders([]) is None
    assert senders.parse_senders(None) is None


@pytest.mark.parametrize(
    "value",
    [["example.com"], ["203.0.113.0/33"], [" 10.0.0.1"], [""], ["fe80::1%eth0"], "10.0.0.1", [7]],
)
def test_bad_sender_lists_are_refused_naming_the_field(value: object) -> None:
    with pytest.raises(Invalid) as refused:
        changes_from_json({"senders": value})
    assert refused.value.field == "senders"


def test_senders_action_is_refuse_or_mark() -> None:
    assert changes_from_json({"senders_action": "mark"}) == {"senders_action": "mark"}
    assert changes_from_json({"senders_action": None}) == {"senders_action": "refuse"}
    with pytest.raises(Invalid, match="senders_action"):
        changes_from_json({"senders_action": "drop"})


def test_the_page_form_takes_one_sender_per_line() -> None:
    form = {
        "forward_url": "",
        "senders": "203.0.113.0/24\r\n\r\n  2001:db8::1  \n",
        "senders_action": "mark",
    }
    changes = changes_from_form(form, {"forward_url": None})
    assert changes["senders"] == ["203.0.113.0/24", "2001:db8::1"]
    assert changes["senders_action"] == "mark"
    assert changes_from_form({**form, "senders": "\n"}, {})["senders"] is None


@pytest.mark.parametrize(
    ("address", "listed"),
    [
        ("203.0.113.9", True),
        ("::ffff:203.0.113.9", True),  # an IPv4 sender seen on an IPv6 socket
        ("203.0.114.1", False),
        ("2001:db8::1", True),
        ("2001:db8::2", False),
        ("garbage", False),
        (None, False),
    ],
)
def test_senders_match_addresses_and_ranges(address: str | None, listed: bool) -> None:
    assert senders.is_listed(["203.0.113.0/24", "2001:db8::1"], address) is listed


def test_ipv6_sources_are_counted_per_64() -> None:
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::9")
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:203.0.113.9") == "203.0.113.9"


def test_every_sender_the_api_document_allows_is_accepted() -> None:
    # Schemathesis sends what the document's pattern allows and expects it to be taken.
    from hypothesis import given, settings
    from hypothesis import strategies as st

    document = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    pattern = document["components"]["schemas"]["BinChanges"]["properties"]["senders"]["items"][
        "pattern"
    ]

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.from_regex(pattern, fullmatch=True))
    def accepted(text: str) -> None:
        assert senders.parse_senders([text])

    accepted()


def test_the_bins_file_takes_sender_lists_checked_like_the_api(tmp_path: Path) -> None:
    from app.bins.binsfile import BinsFileError, read

    path = tmp_path / "bins.toml"
    path.write_text(
        '[bins.github-dev]\nsenders = ["192.30.252.7/22", "2001:DB8::1"]\n'
        'senders_action = "mark"\n\n[bins.open]\n',
        encoding="utf-8",
    )
    github, open_bin = read(path, reserved=set())
    assert github.settings()["senders"] == ["192.30.252.0/22", "2001:db8::1"]
    assert github.settings()["senders_action"] == "mark"
    assert (open_bin.senders, open_bin.senders_action) == (None, "refuse")

    path.write_text('[bins.github-dev]\nsenders = ["github.com"]\n', encoding="utf-8")
    with pytest.raises(BinsFileError, match=r'bin "github-dev": senders #1: .github\.com.'):
        read(path, reserved=set())
