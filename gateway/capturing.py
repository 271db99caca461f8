"""Opening and closing the capture store and its writer with the gateway."""

from __future__ import annotations

import logging

from capture.config import CaptureSettings
from capture.engine import sqlite_path
from capture.errors import SchemaOutOfDate, SchemaTooNew
from capture.errortext import describe_error
from capture.store import Store
from capture.writer import CaptureWriter
from capture.writer_process import ProcessWriter
from dialects.capture import chat_view

log = logging.getLogger("gateway.capture")


class CaptureUnavailable(Exception):
    """The gateway cannot start with this capture configuration; the message says why."""


def describe_url(url: str) -> str:
    """The database URL without its password, for log lines."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


AnyWriter = CaptureWriter | ProcessWriter

NORMALIZE = "dialects.capture:chat_view"
"""The writer process's normaliser (``chat_view``), named for it to import."""


def in_memory(url: str) -> bool:
    """An in-memory SQLite database, which a writer process could not open."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and sqlite_path(parsed) is None


async def open_capture(settings: CaptureSettings, config_path: str) -> tuple[Store, AnyWriter]:
    """The store (schema checked) and a started writer.

    A database without capture tables is initialised on first start; one at another revision
    is left alone and the gateway refuses to start, naming the command that fixes it.
    Every statement is bounded by ``statement_timeout_s`` (SQLite: its busy timeout), so a
    database that stops answering is seen as a failure, not waited on.
    """
    store = await Store.connect(
        settings.database_url,
        sqlite_busy_timeout_ms=int(settings.statement_timeout_s * 1000),
        connect_timeout_s=settings.connect_timeout_s,
        statement_timeout_s=settings.statement_timeout_s,
    )
    try:
        try:
            await store.check_schema(config_path)
        except SchemaTooNew:
            raise
        except SchemaOutOfDate as exc:
            if exc.current is not None:
                raise
            log.info("initialising the capture database %s", describe_url(settings.database_url))
            from capture.migrate import upgrade_async  # Alembic: only to initialise

            await upgrade_async(settings.database_url)
            await store.check_schema(config_path)
    except SchemaOutOfDate as exc:
        await store.close()
        raise CaptureUnavailable(str(exc)) from None
    except Exception as exc:
        await store.close()
        raise CaptureUnavailable(
            f"cannot open the capture database {describe_url(settings.database_url)}: "
            f"{describe_error(exc)}"
        ) from None
    # Calls in Anthropic's dialect are stored with an OpenAI chat view beside them, for export.
    writer: AnyWriter
    if settings.writer == "process" and not in_memory(settings.database_url):
        writer = ProcessWriter(settings, normalize=NORMALIZE)
    else:
        writer = CaptureWriter(store, settings, normalize=chat_view)
    await writer.start()
    return store, writer
