"""gunicorn's logger in the JSON format (``HOOKBIN_LOG_FORMAT=json``; see ``app.ops.logs``)."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from app.ops import logs


class JsonLogger(Logger):
    """gunicorn's error and access logs, and Hookbin's own lines, as JSON objects."""

    def setup(self, cfg: Any) -> None:
        """Set gunicorn's handlers up as usual, then give them (and the root) the JSON format."""
        super().setup(cfg)
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            handler.setFormatter(logs.JsonFormatter())
        logs.configure("json")
