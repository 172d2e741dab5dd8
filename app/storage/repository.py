"""``Storage``: the one way the rest of Hookbin reads and writes bins, requests and attempts.

Every write runs through the serialised writer (``SerialWrites``): on SQLite it leaves the event
loop and queues behind every process's other writers, so no caller can stall a worker with an
fsync or a wait for the write lock. Changing or deleting a bin also drops this process's cached
copy here, so callers never have to remember to. Captures are the one write that takes another
path, the group-commit batcher (``app.storage.batcher``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.engine import Engine

from app.storage import shares, store
from app.storage.bincache import BinCache
from app.storage.writes import SerialWrites

P = ParamSpec("P")
R = TypeVar("R")

Item = dict[str, Any]

BinExists = store.BinExists


class Storage:
    """Bins, captured requests, their bodies and replay/forward attempts, over one database."""

    def __init__(self, engine: Engine, writes: SerialWrites, *, bin_ttl_seconds: float = 2.0):
        self._engine = engine
        self._writes = writes
        self._bins = BinCache(lambda bin_id: store.get_bin(engine, bin_id), bin_ttl_seconds)
        self._deployment_key: str | None = None

    # -- for storage-owning modules (the forward queue, rule counters, the live hub) ---------------

    def read(self, fn: Callable[Concatenate[Engine, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a read-only query function ``fn(engine, ...)`` on the shared engine."""
        return fn(self._engine, *args, **kwargs)

    def write(
        self, fn: Callable[Concatenate[Engine, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run a write transaction ``fn(engine, ...)`` through the serialised writer."""
        return self._writes.run(fn, *args, **kwargs)

    # -- bins --------------------------------------------------------------------------------------

    def get_bin(self, bin_id: str) -> Item | None:
        """The bin as stored now, or None."""
        return store.get_bin(self._engine, bin_id)

    def list_bins(self, *, limit: int, before: str | None = None) -> list[Item]:
        """Up to ``limit`` bins, newest first, optionally made before bin ``before``."""
        return store.list_bins(self._engine, limit=limit, before=before)

    def cached_bin(self, bin_id: str) -> Item | None:
        """The bin, possibly a few seconds old (the capture path's lookup), or None."""
        return self._bins.get(bin_id)

    def forget_bin(self, bin_id: str) -> None:
        """Drop this process's cached copy of a bin (e.g. once a capture found it gone)."""
        self._bins.forget(bin_id)

    def create_bin(
        self,
        bin_id: str | None = None,
        *,
        token_hash: str | None = None,
        page_key_salt: str | None = None,
    ) -> Item:
        """A new empty bin called ``bin_id`` (default: random). Raises ``BinExists``.

        ``token_hash`` is the digest of its API token, ``page_key_salt`` what its view link's key
        is derived from (``app.access.keys``).
        """
        return self._writes.run(
            store.create_bin, bin_id, token_hash=token_hash, page_key_salt=page_key_salt
        )

    def update_bin(self, bin_id: str, **changes: Any) -> Item | None:
        """Change a bin's settings (see ``store.update_bin``); None when it does not exist."""
        try:
            return self._writes.run(store.update_bin, bin_id, **changes)
        finally:
            self._bins.forget(bin_id)

    def delete_bin(self, bin_id: str) -> bool:
        """Delete a bin with everything it captured. True when it existed."""
        try:
            return self._writes.run(store.delete_bin, bin_id)
        finally:
            self._bins.forget(bin_id)

    def clear_bin(self, bin_id: str) -> int:
        """Delete every request of a bin, keep the bin. Returns how many went."""
        return self._writes.run(store.clear_bin, bin_id)

    # -- requests ----------------------------------------------------------------------------------

    def get_request(self, request_id: str) -> Item | None:
        """One request by public id, or None."""
        return store.get_request(self._engine, request_id)

    def list_requests(
        self, bin_id: str, *, limit: int, before_seq: int | None = None
    ) -> list[Item]:
        """Up to ``limit`` requests of a bin, newest first, optionally older than ``before_seq``."""
        return store.list_requests(self._engine, bin_id, limit=limit, before_seq=before_seq)

    def requests_after(self, bin_id: str, after_seq: int, *, limit: int = 500) -> list[Item]:
        """Requests of a bin above ``after_seq``, oldest first (the live hub's read)."""
        return store.requests_after(self._engine, bin_id, after_seq, limit=limit)

    def count_requests(self, bin_id: str) -> int:
        """How many requests a bin holds."""
        return store.count_requests(self._engine, bin_id)

    def last_seq(self, bin_id: str) -> int:
        """The newest sequence number in a bin (0 when empty)."""
        return store.last_seq(self._engine, bin_id)

    def high_water(self) -> int:
        """The highest request sequence handed out so far, in any bin."""
        return store.high_water(self._engine)

    def bins_changed_since(self, after_seq: int) -> dict[str, int]:
        """Every bin holding a request above ``after_seq``, with its highest sequence."""
        return store.bins_changed_since(self._engine, after_seq)

    def get_body(self, seq: int) -> bytes:
        """The exact bytes captured for request ``seq``."""
        return store.get_body(self._engine, seq)

    def delete_request(self, request_id: str) -> bool:
        """Delete one request. True when it existed."""
        return self._writes.run(store.delete_request, request_id)

    def save_verdict(self, seq: int, verdict: dict[str, Any], signing_rev: int) -> None:
        """Store a re-checked signature verdict."""
        self._writes.run(store.save_verdict, seq, verdict, signing_rev)

    # -- attempts ----------------------------------------------------------------------------------

    def add_attempt(self, request_seq: int, kind: str, **fields: Any) -> Item:
        """Store one replay/forward attempt and return it."""
        return self._writes.run(store.add_attempt, request_seq, kind, **fields)

    def list_attempts(self, request_seq: int) -> list[Item]:
        """Every attempt for a request, newest first."""
        return store.list_attempts(self._engine, request_seq)

    def get_attempt(self, request_seq: int, attempt_id: int) -> Item | None:
        """One attempt of request ``request_seq`` by id, or None."""
        return store.get_attempt(self._engine, request_seq, attempt_id)

    # -- share links and the deployment's secrets -------------------------------------------------

    def add_share(self, bin_id: str, share_id: str, key_hash: str, label: str | None) -> Item:
        """Store a read-only share link of a bin, by its key's digest."""
        return self._writes.run(shares.add_share, bin_id, share_id, key_hash, label)

    def list_shares(self, bin_id: str) -> list[Item]:
        """A bin's share links, newest first, revoked ones included."""
        return shares.list_shares(self._engine, bin_id)

    def revoke_share(self, bin_id: str, share_id: str) -> bool:
        """Revoke a share link. True when a live one was revoked."""
        return self._writes.run(shares.revoke_share, bin_id, share_id)

    def live_share(self, key_hash: str) -> Item | None:
        """The live share link whose key has this digest, or None."""
        return shares.live_share(self._engine, key_hash)

    def share_alive(self, bin_id: str, share_id: str) -> bool:
        """Whether a share link exists and is not revoked."""
        return shares.share_alive(self._engine, bin_id, share_id)

    def instance_secret(self, name: str) -> str | None:
        """A secret every process of the deployment shares (e.g. ``cookie_key``)."""
        return shares.instance_secret(self._engine, name)

    def deployment_key(self) -> str:
        """The deployment's own secret (made by migration 0005), read once per process."""
        if self._deployment_key is None:
            key = self.instance_secret("cookie_key")
            if not key:
                raise RuntimeError("the database has no cookie_key: run hookbin migrate")
            self._deployment_key = key
        return self._deployment_key

    def deployment_id(self) -> str:
        """A public id of this deployment, the same in every process and host that share the
        database (it marks the requests Hookbin sends)."""
        digest = hashlib.sha256(f"deployment:{self.deployment_key()}".encode()).hexdigest()
        return f"hb-{digest[:16]}"

    def ping(self) -> None:
        """Raise unless the database answers."""
        store.ping(self._engine)
