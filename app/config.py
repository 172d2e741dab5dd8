"""Every setting Hookbin reads, in one place.

Settings come from ``HOOKBIN_*`` environment variables. Each has a documented default so that a
fresh checkout runs on SQLite with no configuration at all. docs/settings.md lists them all.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


_DURATION = re.compile(r"([0-9]{1,9})([smhd]?)")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}
#: Largest count of requests a bin may be capped at.
MAX_REQUESTS_LIMIT = 1_000_000_000


def parse_duration(text: str) -> int:
    """Seconds in a duration such as ``90s``, ``15m``, ``12h`` or ``30d`` (bare digits: seconds).

    Raises ValueError for anything else, surrounding whitespace included.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a duration like 90s, 15m, 12h or 30d, not {text!r}")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def format_duration(seconds: int) -> str:
    """``seconds`` in the largest unit that divides it exactly (``0`` stays ``0``)."""
    for unit in "dhm":
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return "0" if seconds == 0 else f"{seconds}s"


def _default_database_url() -> str:
    return f"sqlite:///{PROJECT_ROOT / 'instance' / 'hookbin.sqlite3'}"


@dataclass(frozen=True)
class Settings:
    """Hookbin's settings. Field names map to ``HOOKBIN_<NAME>`` environment variables."""

    #: SQLAlchemy URL. SQLite is the embedded default; use postgresql+psycopg://... to scale out.
    database_url: str = field(default_factory=_default_database_url)
    #: Absolute base URL that capture and view URLs are built on (e.g. https://hooks.example.com).
    #: Empty means "the Host the browser used".
    public_url: str = ""
    #: Largest request body accepted on a capture URL, in bytes (GitHub sends at most 25 MiB).
    max_body_bytes: int = 25 * 1024 * 1024
    #: Longest a capture's body may take to arrive once its headers are in, in seconds; a body
    #: still incomplete then is dropped (408). 0: no limit.
    body_timeout_seconds: float = 30.0
    #: SQLite ``synchronous`` mode. FULL makes every acknowledged capture survive power loss;
    #: commits are batched, and each batch is flushed once after its commit (``storage.walsync``).
    sqlite_synchronous: str = "FULL"
    #: How long (ms) an SQLite writer waits for another process's write lock before giving up
    #: (the capture is then answered 503 so that the sender retries).
    sqlite_busy_timeout_ms: int = 5000
    #: Longest a capture waits for more requests to join its commit batch, in milliseconds.
    #: 0 means "commit whatever has queued up as soon as the previous commit is done".
    commit_linger_ms: float = 0.0
    #: Size (MiB) past which the SQLite write-ahead log is checkpointed to its end under the
    #: write lock, so that it starts over. Background checkpoints keep it short while the load
    #: has pauses; under a steady load they never catch up and it would grow without end.
    sqlite_wal_limit_mb: float = 16.0
    #: Longest a commit waits, in milliseconds, for the worker to finish reading the requests
    #: that have already arrived, so they share it (it waits only while the worker is busy; an
    #: idle worker commits at once). 0: commit what has queued up at once.
    commit_idle_max_ms: float = 5.0
    #: Largest number of captured requests committed in one transaction.
    commit_batch_max: int = 256
    #: Directory for the SQLite cross-process notification sockets. Empty: next to the database.
    run_dir: str = ""
    #: How often (seconds) each process re-checks the bins its live viewers watch: a safety net
    #: under push notifications, which may be lost (e.g. while a LISTEN connection reconnects).
    stream_poll_seconds: float = 5.0
    #: Requests held in memory for one live viewer. A viewer that reads more slowly is fed from
    #: the database as it catches up, so it still gets everything, in order.
    stream_max_backlog: int = 2000
    #: Replay/forward: allow loopback and private-network targets (localhost dev servers):
    #: "auto" allows them while the server listens on loopback only, and refuses them once it
    #: listens beyond (where "private" means the server's own network). Link-local and cloud
    #: metadata addresses are always refused.
    allow_private_targets: str = "auto"
    #: Replay/forward: seconds before a target that does not answer is given up on.
    replay_timeout_seconds: float = 10.0
    #: Replay/forward: bytes of the target's answer that are read and kept.
    replay_max_response_bytes: int = 1024 * 1024
    #: Replay/forward: verify TLS certificates of https targets.
    replay_verify_tls: bool = True
    #: Auto-forward: seconds to wait before each retry of a failed try, comma-separated. The
    #: first try is made at once; after the last delay's try fails the entry is given up on.
    #: Empty: one try, no retries.
    forward_retry_schedule: str = "1,2,4,8,16"
    #: Auto-forward: how often (seconds) each process looks for deliveries that are due (queued
    #: by other processes, left over from before a restart, or scheduled retries).
    forward_poll_seconds: float = 1.0
    #: Auto-forward: most deliveries one process has in flight at once (one per bin at most).
    forward_concurrency: int = 16
    #: Address this instance listens on (``hookbin serve`` sets it); loopback-only servers get the
    #: laptop defaults (private targets allowed, only loopback host names served).
    listen_host: str = "127.0.0.1"
    #: Who may create bins: "open" (whoever reaches the server) or "token" (operators only).
    create_bins: str = "open"
    #: Host names (comma-separated) the pages and API answer to, beside HOOKBIN_PUBLIC_URL's own.
    allowed_hosts: str = ""
    #: Port this instance listens on (``hookbin serve`` sets it). Replays to it are refused when
    #: they aim at a capture URL, so a bin can never forward to itself in a loop.
    listen_port: int = 8000
    #: Number of reverse proxies in front of Hookbin whose X-Forwarded-* headers are trusted.
    proxy_hops: int = 0
    #: Captures per bin, ``N/s`` or ``N/min``, counted across every process and instance; beyond
    #: it a capture is answered 429 and not stored. 0: no limit (dropping deliveries fails an
    #: inspector's users, so only the operator of a public instance sets one).
    bin_rate_limit: str = "0"
    #: Captures per source address (behind HOOKBIN_PROXY_HOPS), as ``bin_rate_limit``. 0: none.
    source_rate_limit: str = "0"
    #: Bins made per source address (API and page). On by default: one address cannot fill the
    #: database with bins, and a person or a test suite making one per second stays under it.
    create_rate_limit: str = "60/min"
    #: Write gunicorn's access log to stderr. Off by default: every capture is recorded in the
    #: database and shown on its bin's page, and a log line per request costs throughput.
    access_log: bool = False
    #: Requests shown per page in the UI and the default API page size.
    page_size: int = 50
    #: TOML file defining named bins with their settings (``bins.binsfile``). They are created
    #: or rewritten at every start, so their URLs survive restarts and database resets. Empty:
    #: no such file.
    bins_file: str = ""
    #: Operator tokens, comma-separated (sent as ``Authorization: Bearer <token>``): read and
    #: manage every bin, list all bins, scrape ``/metrics`` from beyond loopback.
    admin_token: str = field(default="", repr=False)
    #: ``text`` or ``json``: json writes Hookbin's and gunicorn's log lines as one JSON object
    #: per line (time, level, logger, message, and bin_id/request_id where known).
    log_format: str = "text"

    #: How long captured requests are kept (``90s``, ``15m``, ``12h``, ``30d``; ``0``: forever),
    #: unless a bin sets its own. A background purge deletes older ones within seconds.
    retention: str = "30d"
    #: Most requests kept per bin (the newest), unless a bin sets its own. 0: no cap.
    bin_max_requests: int = 10000

    def __post_init__(self) -> None:
        if self.create_bins not in ("open", "token"):
            raise ValueError(f"HOOKBIN_CREATE_BINS must be open or token, not {self.create_bins!r}")
        try:
            self.private_targets_allowed  # noqa: B018 - raises on a value that is none of these
        except ValueError:
            raise ValueError(
                "HOOKBIN_ALLOW_PRIVATE_TARGETS must be auto, true or false, "
                f"not {self.allow_private_targets!r}"
            ) from None
        # Refused here, so that a server never starts with a limit it would misread.
        try:
            parse_duration(self.retention.strip())
        except ValueError:
            raise ValueError(
                "HOOKBIN_RETENTION must be a duration like 90s, 15m, 12h or 30d (0: keep "
                f"requests forever), not {self.retention!r}"
            ) from None
        if not 0 <= self.bin_max_requests <= MAX_REQUESTS_LIMIT:
            raise ValueError(
                f"HOOKBIN_BIN_MAX_REQUESTS must be 0 (no cap) to {MAX_REQUESTS_LIMIT}, "
                f"not {self.bin_max_requests}"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from ``HOOKBIN_*`` variables, falling back to the defaults above."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"HOOKBIN_{f.name.upper()}")
            if raw is None:
                continue
            # Fields built by a factory (the database URL) are strings.
            default = "" if f.default is MISSING else f.default
            try:
                values[f.name] = _convert(raw, default)
            except ValueError as exc:
                raise ValueError(f"HOOKBIN_{f.name.upper()}: {exc}") from None
        return cls(**values)

    @property
    def retention_seconds(self) -> int:
        """``retention`` in seconds (0: keep forever)."""
        return parse_duration(self.retention.strip())

    @property
    def is_sqlite(self) -> bool:
        """True when the store is an SQLite file."""
        return self.database_url.startswith("sqlite")

    @property
    def admin_tokens(self) -> tuple[str, ...]:
        """The operator tokens (``HOOKBIN_ADMIN_TOKEN``, comma-separated, blanks dropped)."""
        return tuple(part.strip() for part in self.admin_token.split(",") if part.strip())

    @property
    def exposed(self) -> bool:
        """Whether the server listens beyond the loopback interface."""
        return not _is_loopback(self.listen_host)

    @property
    def private_targets_allowed(self) -> bool:
        """Whether replays and forwards may reach loopback and private networks."""
        value = self.allow_private_targets
        if isinstance(value, bool):
            return value
        choice = value.strip().lower()
        if choice == "auto":
            return not self.exposed
        return _bool(choice)

    @property
    def forward_retry_delays(self) -> tuple[float, ...]:
        """``forward_retry_schedule`` as seconds; raises ValueError when it is malformed."""
        delays: list[float] = []
        for part in self.forward_retry_schedule.split(","):
            if not part.strip():
                continue
            try:
                delay = float(part)
            except ValueError:
                delay = -1.0
            if not 0 <= delay < float("inf"):
                raise ValueError(
                    "HOOKBIN_FORWARD_RETRY_SCHEDULE must be comma-separated non-negative seconds, "
                    f"not {self.forward_retry_schedule!r}"
                )
            delays.append(delay)
        return tuple(delays)

    def notify_dir(self) -> Path:
        """Where SQLite-mode workers keep their notification sockets."""
        if self.run_dir:
            return Path(self.run_dir)
        db_path = self.database_url.split("///", 1)[-1] if self.is_sqlite else ""
        if db_path and db_path != ":memory:":
            return Path(db_path).parent / "hookbin-run"
        # No file to sit next to (PostgreSQL, in-memory SQLite): a private per-user directory.
        return Path(tempfile.gettempdir()) / f"hookbin-run-{os.getuid()}"


def _is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _convert(raw: str, default: object) -> object:
    if isinstance(default, bool):
        return _bool(raw)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw
