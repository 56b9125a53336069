"""The async engine and session factory, built from DATABASE_URL."""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from api.config import ApiSettings
from shared.connections import Health
from shared.tracing import Tracing


def make_engine(settings: ApiSettings) -> AsyncEngine:
    url = settings.database_url
    if url.startswith("sqlite"):
        # SQLite serialises writers; a busy timeout beats "database is locked" under load.
        return create_async_engine(url, connect_args={"timeout": 15})
    return create_async_engine(
        url, pool_size=settings.database_pool_size, max_overflow=10, pool_pre_ping=True
    )


def trace_statements(engine: AsyncEngine, tracing: Tracing) -> None:
    """A CLIENT span per SQL statement (the SQLAlchemy instrumentation), when tracing is on.

    The engine's own tracer, not `SQLAlchemyInstrumentor().instrument()`: that one patches
    `create_engine` and `Engine.connect` process-wide (a span per connection checkout too)
    and instruments once per process; this hooks our engine's statement events only.
    """
    if tracing.provider is None:
        return
    # Imported here, as the SDK is (shared.tracing): nothing of it loads with tracing off.
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer  # noqa: PLC0415
    from opentelemetry.metrics import NoOpMeterProvider  # noqa: PLC0415

    tracer = tracing.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    # Its connection-usage metric goes nowhere: the api exports its own metrics.
    usage = NoOpMeterProvider().get_meter(__name__).create_up_down_counter("db.client.connections")
    EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]  # the package ships no annotations


def make_db(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: rows are read after commit to build responses and events.
    return async_sessionmaker(engine, expire_on_commit=False)


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


async def database_health(engine: AsyncEngine) -> Health:
    started = time.perf_counter()
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (OSError, TimeoutError) as exc:
        return Health("down", None, type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - any driver error means "down"; reported, not raised
        return Health("down", None, type(exc).__name__)
    return Health("ok", round((time.perf_counter() - started) * 1000, 3))
