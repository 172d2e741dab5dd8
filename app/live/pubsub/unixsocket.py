"""SQLite notification driver: Unix datagram sockets in a shared directory."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from app.live.pubsub import WakeCallback

log = logging.getLogger(__name__)

_PEER_CACHE_SECONDS = 1.0


class UnixSocketNotifier:
    """Each process binds ``<dir>/<pid>-<random>.sock``; a publisher sends to every socket there."""

    notify_sql = None

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sock: socket.socket | None = None
        self._path: Path | None = None
        self._sender: socket.socket | None = None
        self._peers: list[Path] = []
        self._peers_at = 0.0
        self._pid = 0

    def start(self, on_wake: WakeCallback) -> None:
        """Bind this process's socket and deliver what arrives on it to ``on_wake``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._pid = os.getpid()
        self._path = self.directory / f"{self._pid}-{secrets.token_hex(4)}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self._path))
        self._sock = sock
        # A stale listing must not keep a brand-new worker out for a whole cache period.
        self._peers_at = 0.0
        threading.Thread(target=self._listen, args=(sock, on_wake), daemon=True).start()

    def _listen(self, sock: socket.socket, on_wake: WakeCallback) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return  # closed
            for bin_id in data.decode("ascii", "replace").split("\n"):
                if bin_id:
                    on_wake(bin_id)

    def _peer_paths(self) -> list[Path]:
        now = time.monotonic()
        if now - self._peers_at > _PEER_CACHE_SECONDS:
            try:
                self._peers = [p for p in self.directory.glob("*.sock") if p != self._path]
            except OSError:
                self._peers = []
            self._peers_at = now
        return self._peers

    def published(self, bin_ids: Iterable[str]) -> None:
        """Send the bin ids to every other process's socket; prune sockets nobody owns."""
        message = "\n".join(bin_ids).encode("ascii", "replace")
        if not message:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        for peer in self._peer_paths():
            try:
                self._sender.sendto(message, str(peer))
            except (ConnectionRefusedError, FileNotFoundError):
                # The process that bound it is gone (killed, not closed): clean up after it.
                with contextlib.suppress(OSError):
                    peer.unlink()
                self._peers_at = 0.0
            except OSError as exc:
                # A full receive buffer: that process catches up on its next poll.
                log.debug("notification to %s dropped: %s", peer, exc)

    def close(self) -> None:
        """Unbind and remove this process's socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._path is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                self._path.unlink()
