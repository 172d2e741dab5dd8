"""The SQL of read-only share links and of the deployment's own secrets (used through Storage)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from app.core.clock import iso, utcnow
from app.storage.db import bin_shares, instance_secrets


def _share_item(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "bin_id": row.bin_id,
        "label": row.label,
        "created_at": iso(row.created_at),
        "revoked_at": iso(row.revoked_at) if row.revoked_at else None,
    }


def add_share(engine: Engine, bin_id: str, share_id: str, key_hash: str, label: str | None) -> dict:
    """Store a read-only share link of a bin (by its key's digest) and return it."""
    with engine.begin() as conn:
        conn.execute(
            sa.insert(bin_shares).values(
                id=share_id, bin_id=bin_id, key_hash=key_hash, label=label, created_at=utcnow()
            )
        )
        row = conn.execute(sa.select(bin_shares).where(bin_shares.c.id == share_id)).one()
    return _share_item(row)


def list_shares(engine: Engine, bin_id: str) -> list[dict[str, Any]]:
    """A bin's share links, newest first, revoked ones included."""
    query = (
        sa.select(bin_shares)
        .where(bin_shares.c.bin_id == bin_id)
        .order_by(bin_shares.c.created_at.desc(), bin_shares.c.id)
    )
    with engine.connect() as conn:
        return [_share_item(r) for r in conn.execute(query)]


def revoke_share(engine: Engine, bin_id: str, share_id: str) -> bool:
    """Revoke one share link of a bin. True when a live one was revoked."""
    query = (
        sa.update(bin_shares)
        .where(
            bin_shares.c.id == share_id,
            bin_shares.c.bin_id == bin_id,
            bin_shares.c.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    with engine.begin() as conn:
        return conn.execute(query).rowcount > 0


def live_share(engine: Engine, key_hash: str) -> dict[str, Any] | None:
    """The live share link whose key has digest ``key_hash``, or None."""
    query = sa.select(bin_shares).where(
        bin_shares.c.key_hash == key_hash, bin_shares.c.revoked_at.is_(None)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return _share_item(row) if row else None


def share_alive(engine: Engine, bin_id: str, share_id: str) -> bool:
    """Whether share link ``share_id`` of bin ``bin_id`` exists and is not revoked."""
    query = sa.select(bin_shares.c.id).where(
        bin_shares.c.id == share_id,
        bin_shares.c.bin_id == bin_id,
        bin_shares.c.revoked_at.is_(None),
    )
    with engine.connect() as conn:
        return conn.execute(query).first() is not None


def instance_secret(engine: Engine, name: str) -> str | None:
    """A secret every process of the deployment shares (made by migration 0005)."""
    query = sa.select(instance_secrets.c.value).where(instance_secrets.c.name == name)
    with engine.connect() as conn:
        return conn.execute(query).scalar()
