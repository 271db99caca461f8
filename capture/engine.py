"""Connecting to a capture database: one ``AsyncEngine`` set up for SQLite or PostgreSQL.

SQLite (``sqlite+aiosqlite:///path.db``): the file and its directory are created on first use;
every connection runs in WAL mode (readers such as the exporter do not block the writer) with
a busy timeout, ``synchronous=NORMAL`` (safe with WAL) and foreign keys on.
PostgreSQL (``postgresql+asyncpg://...``): a small pool checked before use, so the writer gets a
fresh connection after the database was restarted, and a connect timeout, so an unreachable
server fails fast and the batch is retried instead of hanging. With ``statement_timeout_s``
(the gateway sets it; migrations, exports and ``prune`` do not), every statement is bounded
twice: by the server (``statement_timeout``: a slow or locked database answers with an error)
and by the driver (``command_timeout``: a network that swallows packets raises
``TimeoutError``), so a stalled database is seen as a failure instead of a hang.
``pool="null"`` opens a fresh connection for each use (the writer's probe of a database that
was down).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 5_000
CONNECT_TIMEOUT_S = 5.0


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def create_engine(
    url: str | URL,
    *,
    sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    statement_timeout_s: float | None = None,
    pool: Literal["queue", "null"] = "queue",
) -> AsyncEngine:
    url = make_url(url)
    options: dict[str, Any] = {"json_serializer": _dumps, "json_deserializer": orjson.loads}
    path = sqlite_path(url)
    if path is not None:
        path.expanduser().parent.mkdir(parents=True, exist_ok=True)
    if pool == "null":
        options["poolclass"] = NullPool
    if url.get_backend_name() == "postgresql":
        if pool == "queue":
            options.update(pool_size=5, max_overflow=5, pool_pre_ping=True)
        if url.get_driver_name() == "asyncpg":
            server_settings = {"application_name": "gateway-capture"}
            connect_args: dict[str, Any] = {
                "timeout": connect_timeout_s,
                "server_settings": server_settings,
            }
            if statement_timeout_s is not None:
                server_settings["statement_timeout"] = str(max(1, int(statement_timeout_s * 1000)))
                connect_args["command_timeout"] = statement_timeout_s
            options["connect_args"] = connect_args
    engine = create_async_engine(url, **options)
    if url.get_backend_name() == "sqlite":
        timeout = int(sqlite_busy_timeout_ms)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            for pragma in (
                "journal_mode=WAL",
                f"busy_timeout={timeout}",
                "synchronous=NORMAL",
                "foreign_keys=ON",
            ):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

    return engine
