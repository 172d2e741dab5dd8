"""Hit counters of response rules that count ("fail the first N"), shared by every process.

The counter is one row per (bin, rule) in ``rule_hits``, bumped with a single atomic upsert that
returns the new value, so however many workers and hosts answer a bin, exactly the first N
matching requests fail. Counters start over when the bin's responses are saved
(``store.update_bin`` deletes the rows in the same transaction).

The bump is a write like any other outside the capture commit, so it goes through
``app.storage.writes.SerialWrites``: on SQLite it runs on a native thread under the writers' lock
file, so an fsync or another process's write never freezes the event loop.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from app.storage.db import rule_hits
from app.storage.writes import SerialWrites, write_transaction


class BinGone(Exception):
    """The bin was deleted meanwhile (its counter row has nothing to belong to)."""


def bump(engine: Engine, bin_id: str, rule_id: str) -> int:
    """Add one to the rule's counter in one transaction and return the new value (1 at first).

    Raises BinGone when the bin no longer exists.
    """
    insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(
        rule_hits
    )
    query = (
        insert.values(bin_id=bin_id, rule_id=rule_id, hits=1)
        .on_conflict_do_update(
            index_elements=[rule_hits.c.bin_id, rule_hits.c.rule_id],
            set_={"hits": rule_hits.c.hits + 1},
        )
        .returning(rule_hits.c.hits)
    )
    try:
        with write_transaction(engine) as conn:
            return int(conn.execute(query).scalar_one())
    except sa.exc.IntegrityError:
        raise BinGone(bin_id) from None


class RuleHits:
    """This process's way of bumping rule counters."""

    def __init__(self, writes: SerialWrites) -> None:
        self._writes = writes

    def bump(self, bin_id: str, rule_id: str) -> int:
        """Add one to the rule's counter and return the new value; BinGone if the bin is gone."""
        return self._writes.run(bump, bin_id, rule_id)
