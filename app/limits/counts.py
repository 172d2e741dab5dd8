"""The shared hit counts of rate limits: one ``rate_counters`` row per scope, key and window.

Processes add the hits they admitted with one atomic upsert that returns the window's new total,
so every worker of every instance on one database sees the same count. Rows of windows that are
over are deleted as processes go: a key's older rows whenever its count is added to, and every
row older than two minutes in an occasional sweep. Writes go through ``Storage.write`` (on
SQLite off the event loop, queued behind the other writers).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from app.storage.db import rate_counters
from app.storage.writes import write_transaction

#: Rows whose window started this long ago are over for every rate (windows are 1 s or 60 s).
STALE_SECONDS = 120


def add_hits(
    engine: Engine,
    scope: str,
    key: str,
    window: int,
    hits: int,
    *,
    sweep_before: int | None = None,
) -> int:
    """Add ``hits`` to the count of (``scope``, ``key``, ``window``) and return the new total.

    Deletes the key's rows of earlier windows in the same transaction, and, when
    ``sweep_before`` is given, every row of any key whose window started before it.
    """
    insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(
        rate_counters
    )
    upsert = (
        insert.values(scope=scope, key=key, window=window, hits=hits)
        .on_conflict_do_update(
            index_elements=[rate_counters.c.scope, rate_counters.c.key, rate_counters.c.window],
            set_={"hits": rate_counters.c.hits + insert.excluded.hits},
        )
        .returning(rate_counters.c.hits)
    )
    c = rate_counters.c
    with write_transaction(engine) as conn:
        total = int(conn.execute(upsert).scalar_one())
        conn.execute(
            sa.delete(rate_counters).where(c.scope == scope, c.key == key, c.window < window)
        )
        if sweep_before is not None:
            conn.execute(sa.delete(rate_counters).where(c.window < sweep_before))
    return total


def count_of(engine: Engine, scope: str, key: str, window: int) -> int:
    """The shared count of one key in one window (0 when nobody counted it)."""
    c = rate_counters.c
    query = sa.select(c.hits).where(c.scope == scope, c.key == key, c.window == window)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)
