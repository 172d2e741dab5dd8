"""Is the database on the newest schema? For ``/readyz`` and for refusing to start without one.

The newest revision is the head of ``migrations/``; the database's is what Alembic recorded in
it (none when it was never migrated).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine, make_url

from app.config import PROJECT_ROOT


class NotMigrated(RuntimeError):
    """The database is reachable but not on the schema this code needs."""


@dataclass(frozen=True)
class SchemaState:
    """The revision a database is at, and the one this code expects."""

    current: str | None
    head: str

    @property
    def ready(self) -> bool:
        """True when the database is at the newest revision."""
        return self.current == self.head

    @property
    def known(self) -> bool:
        """False when the database is at a revision missing from ``migrations/`` (newer code)."""
        return self.current is None or self.current in _known_revisions()

    def problem(self) -> str:
        """What is wrong with the database, in a few words ("" when nothing is)."""
        if self.ready:
            return ""
        if self.current is None:
            return "is not migrated"
        if self.known:
            return f"is at revision {self.current}, not the newest ({self.head})"
        return f"is at revision {self.current}, which this Hookbin does not know"


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(PROJECT_ROOT / "migrations"))


def head_revision() -> str:
    """The newest revision in ``migrations/``."""
    head = _scripts().get_current_head()
    assert head is not None, "migrations/ has no revision"
    return head


@functools.cache
def _known_revisions() -> frozenset[str]:
    return frozenset(s.revision for s in _scripts().walk_revisions())


def schema_state(engine: Engine) -> SchemaState:
    """Read the database's revision (one query); raises SQLAlchemyError when it does not answer."""
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return SchemaState(current=current, head=head_revision())


def shown_url(database_url: str) -> str:
    """The database URL without its password, for messages."""
    return make_url(database_url).render_as_string(hide_password=True)


def require_migrated(engine: Engine, database_url: str) -> None:
    """Raise NotMigrated, saying what to do, unless the database is on the newest schema.

    A database that does not answer raises SQLAlchemyError: whether to start anyway is the
    caller's choice.
    """
    state = schema_state(engine)
    if state.ready:
        return
    if state.known:
        advice = "run `hookbin migrate` (with the same HOOKBIN_DATABASE_URL) first"
    else:
        advice = "run a Hookbin at least as new as the one that migrated it"
    raise NotMigrated(f"the database at {shown_url(database_url)} {state.problem()}; {advice}")
