"""Apply Alembic migrations from code (``hookbin migrate`` and start-up on SQLite)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from app.config import PROJECT_ROOT


def upgrade(database_url: str) -> None:
    """Bring the database at ``database_url`` to the newest schema."""
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logging"] = False
    command.upgrade(cfg, "head")
