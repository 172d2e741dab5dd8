"""Bins defined in a TOML file (``HOOKBIN_BINS_FILE``): fixed URLs that survive restarts and resets.

::

    [bins.stripe-dev]
    forward_url = "http://localhost:3000/webhooks/stripe"
    auto_forward = true
    signing = { provider = "stripe", secrets = ["env:STRIPE_WEBHOOK_SECRET"] }

Each table under ``bins`` defines one bin; its key is the bin's name, which is its id and so the
last segment of its capture URL (``/h/stripe-dev``; the rule is in ``names``). A bin's keys,
all optional: ``forward_url``, ``auto_forward``, ``signing`` ({provider, secrets}, checked by
``verdicts.validate_signing``), ``responses`` (checked by ``app.rules.validate``), ``retention``
(a duration such as ``"7d"``, or seconds), ``max_requests``, ``senders`` and ``senders_action``
(checked by ``settings``, as the API checks them). A secret
written ``"env:NAME"`` is read from the environment variable NAME, so no secret needs to sit in
the file.

At every app start the file is read and applied: a bin it defines is created when missing and
otherwise has its settings rewritten from the file (a key left out means its default: no forward
target, auto-forward off, no signing, the standard answer, the server's retention and cap);
those bins are ``managed``. A bin
that is no longer in the file keeps its URL and what it caught but becomes an ordinary bin
(``managed`` false). Every worker of every instance applies the file as it starts, concurrently;
the steps below tolerate each other, and the result is the same whichever runs first.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.access import keys
from app.bins.names import InvalidName, check_name
from app.bins.settings import (
    check_forward_url,
    check_max_requests,
    check_retention,
    check_senders,
    check_senders_action,
)
from app.core.clock import utcnow
from app.core.invalid import Invalid
from app.rules.validate import validate_responses
from app.signing.verdicts import validate_signing
from app.storage.db import bins, rule_hits
from app.storage.repository import Storage

log = logging.getLogger(__name__)

_BIN_KEYS = (
    "forward_url",
    "auto_forward",
    "signing",
    "responses",
    "retention",
    "max_requests",
    "senders",
    "senders_action",
    "token",
)
#: Shortest API token a file may set (as long as the tokens Hookbin makes).
MIN_TOKEN_CHARS = 32
_SIGNING_KEYS = ("provider", "secrets")
ENV_PREFIX = "env:"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Any fixed number will do: the PostgreSQL advisory lock under which processes apply the file one
# at a time, so that two of them never both bump a bin's signing revision for one change.
_PG_LOCK_KEY = 0x686F6F6B62696E  # "hookbin"


class BinsFileError(Exception):
    """The bins file cannot be used; the message names the file, the bin and the problem."""

    def __init__(self, path: str | Path, problem: str, bin_name: str | None = None) -> None:
        self.path = str(path)
        self.bin_name = bin_name
        self.problem = problem
        where = f'bin "{bin_name}": ' if bin_name is not None else ""
        super().__init__(f"bins file {self.path}: {where}{problem}")


@dataclass(frozen=True)
class FileBin:
    """One bin as the file defines it, validated, with ``env:`` secrets already read."""

    name: str
    forward_url: str | None = None
    auto_forward: bool = False
    signing: dict[str, Any] | None = None
    responses: dict[str, Any] | None = None
    retention_seconds: int | None = None
    max_requests: int | None = None
    senders: list[str] | None = None
    senders_action: str = "refuse"
    #: Digest of the API token the file gives the bin; None leaves the bin's token as it is.
    token_hash: str | None = None

    def settings(self) -> dict[str, Any]:
        """The bin's columns as the file wants them."""
        wanted = {
            "forward_url": self.forward_url,
            "auto_forward": self.auto_forward,
            "signing": self.signing,
            "responses": self.responses,
            "retention_seconds": self.retention_seconds,
            "max_requests": self.max_requests,
            "senders": self.senders,
            "senders_action": self.senders_action,
            "managed": True,
        }
        if self.token_hash is not None:
            wanted["token_hash"] = self.token_hash
        return wanted


@dataclass
class SyncReport:
    """What applying the file changed."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)


# --- reading --------------------------------------------------------------------------------------


def read(
    path: str | Path, reserved: Collection[str], environ: Mapping[str, str] | None = None
) -> list[FileBin]:
    """Read and validate the bins file at ``path``; raises BinsFileError on the first problem.

    ``reserved`` are the names no bin may take (``app.bins.names.reserved_names``); ``environ``
    (default: the process environment) resolves ``env:NAME`` secrets.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise BinsFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise BinsFileError(path, "is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BinsFileError(path, f"is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per level of nested arrays and inline tables
        raise BinsFileError(path, "is not valid TOML: nested too deeply") from None
    unknown = sorted(set(data) - {"bins"})
    if unknown:
        raise BinsFileError(
            path, f"unknown top-level key {', '.join(unknown)}: only [bins.<name>] tables go here"
        )
    tables = data.get("bins", {})
    if not isinstance(tables, dict):
        raise BinsFileError(path, "bins must be a table of [bins.<name>] tables")
    env = os.environ if environ is None else environ
    return [_parse_bin(path, name, spec, reserved, env) for name, spec in tables.items()]


def _parse_bin(
    path: str | Path,
    name: str,
    spec: Any,
    reserved: Collection[str],
    env: Mapping[str, str],
) -> FileBin:
    def fail(problem: str) -> BinsFileError:
        return BinsFileError(path, problem, name)

    try:
        check_name(name, reserved)
    except InvalidName as exc:
        raise fail(str(exc)) from None
    if not isinstance(spec, dict):
        raise fail("must be a table: [bins.<name>] followed by its keys")
    unknown = sorted(set(spec) - set(_BIN_KEYS))
    if unknown:
        raise fail(f"unknown key {', '.join(unknown)} (known keys: {', '.join(_BIN_KEYS)})")

    try:
        forward_url = check_forward_url(spec.get("forward_url"))
    except Invalid as exc:
        raise fail(str(exc)) from None
    auto_forward = spec.get("auto_forward", False)
    if not isinstance(auto_forward, bool):
        raise fail("auto_forward must be true or false")
    if auto_forward and forward_url is None:
        raise fail("auto_forward = true needs a forward_url")

    signing = None
    if "signing" in spec:
        signing = _signing(spec["signing"], env, fail)
    responses = None
    if "responses" in spec:
        responses = _responses(spec["responses"], fail)
    try:
        retention = check_retention(spec.get("retention"))
        max_requests = check_max_requests(spec.get("max_requests"))
        senders = check_senders(spec.get("senders"))
        senders_action = check_senders_action(spec.get("senders_action"))
    except Invalid as exc:
        raise fail(str(exc)) from None
    token_hash = None
    if "token" in spec:
        token = _secret(spec["token"], 0, env, fail, what="token")
        if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN_CHARS:
            raise fail(f"token must be a string of at least {MIN_TOKEN_CHARS} characters")
        token_hash = keys.digest(token.strip())
    return FileBin(
        name,
        forward_url,
        auto_forward,
        signing,
        responses,
        retention,
        max_requests,
        senders,
        senders_action,
        token_hash,
    )


def _signing(value: Any, env: Mapping[str, str], fail: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        raise fail('signing must be a table like { provider = "stripe", secrets = ["..."] }')
    unknown = sorted(set(value) - set(_SIGNING_KEYS))
    if unknown:
        raise fail(f"signing: unknown key {', '.join(unknown)} (known keys: provider, secrets)")
    secrets = value.get("secrets", [])
    if isinstance(secrets, list):
        value = {**value, "secrets": [_secret(s, i, env, fail) for i, s in enumerate(secrets, 1)]}
    try:
        return validate_signing(value)
    except ValueError as exc:
        raise fail(str(exc)) from None


def _secret(
    value: Any, number: int, env: Mapping[str, str], fail: Any, what: str = "signing secret"
) -> Any:
    """A secret as given, or the value of the environment variable an ``env:NAME`` names."""
    if not isinstance(value, str) or not value.startswith(ENV_PREFIX):
        return value  # validate_signing judges it
    var = value[len(ENV_PREFIX) :]
    where = f"{what} #{number}" if number else what
    if not _ENV_NAME.fullmatch(var):
        raise fail(f'{where}: "{value}" does not name an environment variable')
    resolved = env.get(var)
    # Messages name the variable, never its value.
    if resolved is None:
        raise fail(f"{where}: environment variable {var} is not set")
    if not resolved.strip():
        raise fail(f"{where}: environment variable {var} is empty")
    return resolved


def _responses(value: Any, fail: Any) -> dict[str, Any] | None:
    if isinstance(value, dict) and isinstance(value.get("rules"), list):
        # A rule's id keys its "fail the first N" counter. A rule without one would get a fresh
        # random id at every start, in every worker, so give it one from its position instead.
        value = {
            **value,
            "rules": [
                {**rule, "id": f"rule-{number}"}
                if isinstance(rule, dict) and not rule.get("id")
                else rule
                for number, rule in enumerate(value["rules"], 1)
            ],
        }
    try:
        return validate_responses(value)
    except ValueError as exc:
        message = str(exc)
        if not message.startswith("responses"):
            message = f"responses: {message}"
        raise fail(message) from None


def describe(path: str | Path, defined: Sequence[FileBin]) -> str:
    """One line saying what the file defines."""
    names = ", ".join(b.name for b in defined) or "none"
    return f"bins file {path}: {len(defined)} bin{'' if len(defined) == 1 else 's'} ({names})"


# --- applying -------------------------------------------------------------------------------------


def sync(engine: Engine, defined: Sequence[FileBin]) -> SyncReport:
    """Create or rewrite the bins ``defined`` (managed), release managed bins left out.

    One transaction. Safe to run from many processes at once: a bin another process has just
    created is left to the update step rather than inserted twice, and on PostgreSQL the whole
    sync runs under an advisory lock; on SQLite the write lock is taken up front and the busy
    timeout queues the others.
    """
    report = SyncReport()
    names = [b.name for b in defined]
    with engine.connect() as conn:
        conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            current = (
                {row.id: row for row in conn.execute(sa.select(bins).where(bins.c.id.in_(names)))}
                if names
                else {}
            )
            for wanted in defined:
                row = current.get(wanted.name)
                if row is None:
                    if _insert_if_missing(conn, wanted):
                        report.created.append(wanted.name)
                        continue
                    # Made meanwhile by someone else (a user through the API): adopt it.
                    row = conn.execute(sa.select(bins).where(bins.c.id == wanted.name)).one()
                changes = _changes(row, wanted)
                if changes:
                    conn.execute(sa.update(bins).where(bins.c.id == wanted.name).values(**changes))
                    if "responses" in changes:
                        # New rules count from zero, as when they are saved on the page.
                        conn.execute(sa.delete(rule_hits).where(rule_hits.c.bin_id == wanted.name))
                    report.updated.append(wanted.name)
            left = sa.select(bins.c.id).where(bins.c.managed, bins.c.id.not_in(names))
            report.released = sorted(conn.execute(left).scalars())
            if report.released:
                conn.execute(
                    sa.update(bins).where(bins.c.id.in_(report.released)).values(managed=False)
                )
    return report


def _db_values(values: dict[str, Any]) -> dict[str, Any]:
    # SQL NULL rather than a JSON "null" document for settings that are not set, exactly as in a
    # bin freshly made through the API.
    return {
        k: sa.null() if v is None and k in ("signing", "responses", "senders") else v
        for k, v in values.items()
    }


def _insert_if_missing(conn: Connection, wanted: FileBin) -> bool:
    """Insert the bin unless it exists (by now); True when this call created it."""
    values = _db_values(
        {
            "id": wanted.name,
            "created_at": utcnow(),
            "page_key_salt": keys.new_salt(),
            **wanted.settings(),
        }
    )
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(bins).values(**values).on_conflict_do_nothing(index_elements=[bins.c.id])
        return conn.execute(statement.returning(bins.c.id)).first() is not None
    # Any other database: a savepoint keeps the transaction usable after a duplicate key.
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(bins).values(**values))
    except sa.exc.IntegrityError:
        return False
    return True


def _changes(row: sa.Row[Any], wanted: FileBin) -> dict[str, Any]:
    """The columns of ``row`` that differ from the file, as an UPDATE's values."""
    changes = {k: v for k, v in wanted.settings().items() if getattr(row, k) != v}
    if "signing" in changes:
        # Stored verdicts were computed under the old secrets: re-check them when next read.
        changes["signing_rev"] = bins.c.signing_rev + 1
    return _db_values(changes)


# --- at start -----------------------------------------------------------------------------------


def apply(storage: Storage, path: str, reserved: Collection[str]) -> None:
    """Apply the bins file at ``path`` to the database (at start-up, once routes are known).

    ``reserved`` are the names no bin may take (every route's first segment). Raises
    BinsFileError (the server must not start) when the file is broken or cannot be applied.
    """
    defined = read(path, reserved)
    try:
        report = storage.write(sync, defined)
    except sa.exc.SQLAlchemyError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BinsFileError(
            path,
            f"could not be applied to the database ({first}); is the database migrated "
            "(hookbin migrate)?",
        ) from exc
    log.info(
        "%s; created %s, updated %s, no longer managed %s",
        describe(path, defined),
        report.created or "none",
        report.updated or "none",
        report.released or "none",
    )
