"""`python -m api.migrate`: upgrade the database at DATABASE_URL to the newest revision.

`make run` and the test harness call this before the api starts. Safe to run repeatedly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from api.config import SERVICE_NAME, load
from shared.logs import setup_logging
from shared.settings import redact_url

logger = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # `%` is ConfigParser interpolation: a password with `%` must not break the URL.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking (Alembic drives its own event loop): call it outside a running loop."""
    if database_url.startswith("sqlite"):
        _ensure_sqlite_directory(database_url)
    command.upgrade(alembic_config(database_url), revision)


def _ensure_sqlite_directory(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def main() -> int:
    settings = load()  # a bad setting: one line and exit 2
    setup_logging(SERVICE_NAME, settings.log_level, settings.log_format)
    upgrade(settings.database_url)
    logger.info("database at %s is at the newest revision", redact_url(settings.database_url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
