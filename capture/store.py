"""The capture store: calls and feedback in SQLite or PostgreSQL, over SQLAlchemy's async engine.

The writer is its only hot user (``insert_calls``, a batch in one transaction of executemany
INSERTs of 32 rows, its parameters made in slices between which the event loop runs, and
``ping`` while the database is down); the gateway's feedback endpoint, the CLI (``prune``) and
tests use the rest. Every method opens and releases its own connection, so one ``Store`` serves
a whole process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Insert, delete, exists, func, insert, literal, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from capture.content import CONTENT_KEY, FLAG, Parts, encode, resolve_rows
from capture.engine import CONNECT_TIMEOUT_S, SQLITE_BUSY_TIMEOUT_MS, create_engine, sqlite_path
from capture.errors import SchemaOutOfDate, SchemaTooNew, UnknownCall
from capture.partitions import PruneResult, Unit, drop_partitions_before
from capture.revision import HEAD_REVISION, revision_of
from capture.schema import calls, content, feedback

Row = dict[str, Any]
INSERT_CHUNK_ROWS = 32
"""Rows per executemany: the driver encodes a chunk's parameters in one step of the loop."""
ENCODE_SLICE_S = 0.0002
"""Longest stretch of turning rows into parameters before the event loop gets a turn."""
KNOWN_HASHES_LIMIT = 100_000
"""Hashes of parts known to be in ``content`` (committed by this store), with the UTC day their
``last_seen`` was last set; forgotten, all at once, when there are more."""


class Store:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        statement_timeout_s: float | None = None,
    ) -> None:
        self.engine = engine
        self._insert_calls = self._idempotent_insert()
        self._insert_content = self._content_insert()
        self._known_hashes: dict[str, dt.date] = {}
        self._timeouts = (connect_timeout_s, statement_timeout_s)
        self._probe_engine: AsyncEngine | None = None
        self._compiled: _Plans | None = None
        self.clock: Callable[[], dt.datetime] = _utc_now
        """The time parts are marked seen at (``content.last_seen``); tests move it."""

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        statement_timeout_s: float | None = None,
    ) -> Store:
        """A store for ``url``; connects lazily (an unreachable database fails on first use).

        ``statement_timeout_s`` bounds every statement (``capture.engine``); None: no bound.
        """
        engine = create_engine(
            url,
            sqlite_busy_timeout_ms=sqlite_busy_timeout_ms,
            connect_timeout_s=connect_timeout_s,
            statement_timeout_s=statement_timeout_s,
        )
        return cls(
            engine, connect_timeout_s=connect_timeout_s, statement_timeout_s=statement_timeout_s
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _idempotent_insert(self) -> Insert:
        """INSERT ... ON CONFLICT (id) DO NOTHING: a batch retried after a commit whose
        acknowledgement was lost (the connection died) does not fail on its own rows.
        PostgreSQL's ``calls`` is partitioned by time, keyed by ``(id, created_at)``
        (``capture.partitions``); a retried row has the same time."""
        if self.dialect == "postgresql":
            return postgresql.insert(calls).on_conflict_do_nothing(
                index_elements=["id", "created_at"]
            )
        if self.dialect == "sqlite":
            return sqlite.insert(calls).on_conflict_do_nothing(index_elements=["id"])
        return insert(calls)

    def _content_insert(self) -> Insert:
        """INSERT ... ON CONFLICT (hash) DO UPDATE SET last_seen: a part another call (or
        replica) stored first keeps its bytes (same hash, same bytes) and is marked seen today,
        unless it already is (no row version written then)."""
        if self.dialect == "postgresql":
            upsert = postgresql.insert(content)
            return upsert.on_conflict_do_update(
                index_elements=["hash"],
                set_={"last_seen": upsert.excluded.last_seen},
                where=content.c.last_seen < upsert.excluded.last_seen,
            )
        if self.dialect == "sqlite":
            lite = sqlite.insert(content)
            return lite.on_conflict_do_update(
                index_elements=["hash"],
                set_={"last_seen": lite.excluded.last_seen},
                where=content.c.last_seen < lite.excluded.last_seen,
            )
        return insert(content)

    async def _split_content(
        self, rows: Sequence[Mapping[str, Any]], today: dt.date
    ) -> tuple[list[Row], Parts]:
        """The rows as columns (every row with ``content_refs``), and the parts to write: those
        not stored yet, or not marked seen today by this store (``content.last_seen``, which
        the collector relies on: ``capture.retention``). In slices, as ``_Plan.encode``."""
        parts: Parts = {}
        known = self._known_hashes
        clean: list[Row] = []
        clock = time.perf_counter
        started = last = clock()
        for row in rows:
            own = row.get(CONTENT_KEY)
            values = {key: value for key, value in row.items() if key != CONTENT_KEY}
            values.setdefault(FLAG, None)
            clean.append(values)
            if own:
                for digest, part in own.items():
                    if known.get(digest) != today:
                        parts[digest] = part
            now = clock()
            if 2 * now - last - started >= ENCODE_SLICE_S:  # the next row would pass it
                await asyncio.sleep(0)
                now = started = clock()
            last = now
        return clean, parts

    def _remember(self, hashes: Sequence[str], today: dt.date) -> None:
        if len(self._known_hashes) + len(hashes) > KNOWN_HASHES_LIMIT:
            self._known_hashes.clear()
        self._known_hashes.update(dict.fromkeys(hashes, today))

    async def check_schema(self, config_path: str = "FILE") -> None:
        """Raise ``SchemaOutOfDate`` unless the database is at this code's revision.

        ``config_path`` goes into the message's ``gateway db upgrade --config FILE``.
        """
        async with self.engine.connect() as connection:
            current = await revision_of(connection)
        needed = HEAD_REVISION
        if current == needed:
            return
        # Here, not at the top: Alembic (with Mako, ~85 ms and ~8 MiB of imports) only for a
        # database that is not at this code's revision, never at a plain start.
        from capture.migrate import known_revisions

        if current is not None and current not in known_revisions():
            raise SchemaTooNew(current, needed, config_path)
        raise SchemaOutOfDate(current, needed, config_path)

    async def insert_calls(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert prepared rows (``capture.prepare``) in one transaction; ids already stored are
        skipped. Rows prepared with ``content_store`` bring their request parts
        (``capture.content``): those this store has not written yet go first, in the same
        transaction, each once.

        The writer's batches never hold the event loop for long (``capture.writer``): the rows
        are turned into the driver's parameters here, by SQLAlchemy's own bind processors
        (JSON serialised, times in UTC), in slices of ``ENCODE_SLICE_S`` between which the loop
        runs, and sent ``INSERT_CHUNK_ROWS`` at a time with the statement compiled once
        (``exec_driver_sql``). Through SQLAlchemy's ``execute``, the parameters of a 64-row chunk
        took ~2-5 ms of CPU in one step. On PostgreSQL a chunk of calls is one INSERT of that
        many rows, not an executemany (which the server runs row by row): its backend's CPU a
        row 34 -> 27 µs, CPU that on a shared host is taken from the calls. Parts stay an
        executemany (their upsert may not meet one key twice in a statement; they are rare).
        """
        if not rows:
            return
        plans = self._plans()
        now = self.clock()
        today = now.astimezone(dt.UTC).date()
        call_rows: Sequence[Mapping[str, Any]] = rows
        parts: Parts = {}
        if any(FLAG in row for row in rows):
            call_rows, parts = await self._split_content(rows, today)
        hashes = sorted(parts)  # one order for every writer: no deadlock between replicas
        content_rows = [
            {"hash": digest, "created_at": now, "body": parts[digest], "last_seen": today}
            for digest in hashes
        ]
        content_params = await plans.content.encode(content_rows)
        call_params = await plans.calls.encode(call_rows)
        multirow = self.dialect == "postgresql"
        async with self.engine.begin() as connection:
            for start in range(0, len(content_params), INSERT_CHUNK_ROWS):
                chunk = content_params[start : start + INSERT_CHUNK_ROWS]
                await connection.exec_driver_sql(plans.content.sql, chunk)
            for start in range(0, len(call_params), INSERT_CHUNK_ROWS):
                chunk = call_params[start : start + INSERT_CHUNK_ROWS]
                if multirow:
                    flat = tuple(value for params in chunk for value in params)
                    await connection.exec_driver_sql(plans.calls.rows(len(chunk)), flat)
                else:
                    await connection.exec_driver_sql(plans.calls.sql, chunk)
        if hashes:
            self._remember(hashes, today)

    def _plans(self) -> _Plans:
        if self._compiled is None:
            calls_plan = _Plan.of(self._insert_calls, [c.key for c in calls.columns], self.engine)
            content_plan = _Plan.of(
                self._insert_content,
                ["hash", "created_at", "body", "last_seen"],
                self.engine,
                {"body": encode},
            )
            self._compiled = _Plans(calls_plan, content_plan)
        return self._compiled

    async def ping(self) -> None:
        """Raise unless the database can be written now, asked on a fresh connection.

        PostgreSQL: ``SELECT 1`` over a new connection (never a pooled one, which may be stuck
        on a dead network), bounded by the connect and statement timeouts. SQLite: a new
        connection takes the write lock and lets it go at once (``BEGIN IMMEDIATE``), without
        waiting for it.
        """
        path = sqlite_path(self.engine.url)
        if path is not None:
            await asyncio.to_thread(_take_write_lock, path.expanduser())
            return
        if self.dialect == "sqlite":
            return  # in memory: nothing to wait for
        if self._probe_engine is None:
            connect_timeout_s, statement_timeout_s = self._timeouts
            self._probe_engine = create_engine(
                self.engine.url,
                connect_timeout_s=connect_timeout_s,
                statement_timeout_s=statement_timeout_s or connect_timeout_s,
                pool="null",
            )
        async with self._probe_engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def add_feedback(
        self,
        request_id: str,
        score: float,
        label: str | None = None,
        comment: str | None = None,
        *,
        now: dt.datetime | None = None,
    ) -> int:
        """Attach feedback to a stored call and return its id; ``UnknownCall`` if there is none.

        One statement: ``INSERT INTO feedback SELECT ... WHERE EXISTS (the call)``.
        """
        created = now or dt.datetime.now(dt.UTC)
        values = select(
            literal(request_id, calls.c.id.type),
            literal(created, feedback.c.created_at.type),
            literal(float(score), feedback.c.score.type),
            literal(label, feedback.c.label.type),
            literal(comment, feedback.c.comment.type),
        ).where(exists().where(calls.c.id == request_id))
        statement = (
            insert(feedback)
            .from_select(["request_id", "created_at", "score", "label", "comment"], values)
            .returning(feedback.c.id)
        )
        async with self.engine.begin() as connection:
            new_id = (await connection.execute(statement)).scalar()
        if new_id is None:
            raise UnknownCall(request_id)
        return int(new_id)

    async def get_call(self, request_id: str) -> Row | None:
        async with self.engine.connect() as connection:
            result = await connection.execute(select(calls).where(calls.c.id == request_id))
            found = result.mappings().first()
            if found is None:
                return None
            row = dict(found)
            await resolve_rows(connection, [row])
        row.pop(FLAG, None)
        return row

    async def feedback_for(self, request_id: str) -> list[Row]:
        """The call's feedback, oldest first."""
        query = (
            select(feedback)
            .where(feedback.c.request_id == request_id)
            .order_by(feedback.c.created_at, feedback.c.id)
        )
        async with self.engine.connect() as connection:
            result = await connection.execute(query)
            return [dict(row) for row in result.mappings()]

    async def count_calls(self) -> int:
        async with self.engine.connect() as connection:
            count = await connection.scalar(select(func.count()).select_from(calls))
        return int(count or 0)

    async def prune(self, older_than: dt.timedelta, *, now: dt.datetime | None = None) -> int:
        """Delete calls created more than ``older_than`` ago, and their feedback; the number of
        calls deleted (``prune_partitions``)."""
        return (await self.prune_partitions(older_than, now=now)).calls

    async def prune_partitions(
        self, older_than: dt.timedelta, *, unit: Unit = "day", now: dt.datetime | None = None
    ) -> PruneResult:
        """Remove every call created more than ``older_than`` ago, and its feedback: on
        PostgreSQL the partitions that end before the cutoff are dropped
        (``capture.partitions.drop_partitions_before``), then the older rows of the partition
        holding the cutoff are deleted (SQLite: whole days, then the rest, all by DELETE)."""
        cutoff = (now or dt.datetime.now(dt.UTC)) - older_than
        dropped = await drop_partitions_before(self.engine, cutoff, unit=unit)
        old = select(calls.c.id).where(calls.c.created_at < cutoff)
        async with self.engine.begin() as connection:
            gone = await connection.execute(delete(feedback).where(feedback.c.request_id.in_(old)))
            result = await connection.execute(delete(calls).where(calls.c.created_at < cutoff))
        return PruneResult(
            cutoff,
            dropped.dropped,
            dropped.calls + int(result.rowcount),
            dropped.feedback + int(gone.rowcount),
        )

    async def close(self) -> None:
        await self.engine.dispose()
        if self._probe_engine is not None:
            await self._probe_engine.dispose()


@dataclass(frozen=True, slots=True)
class _Plan:
    """An INSERT compiled once for the engine's dialect, and how a row becomes its positional
    parameters: each column's value through SQLAlchemy's bind processor for it (what
    ``execute`` would do), after an ``encode`` of our own where given."""

    sql: str
    columns: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    multi: dict[int, str] = field(default_factory=dict, compare=False)
    """The statement for n rows at once (``rows``), made when first asked for."""

    def rows(self, count: int) -> str:
        """The statement inserting ``count`` rows, their parameters one row after the other:
        the compiled VALUES group repeated, its ``$n`` placeholders numbered on (PostgreSQL's
        positional style; ``sql`` has exactly one VALUES group)."""
        known = self.multi.get(count)
        if known is not None:
            return known
        opening = self.sql.index(" VALUES (") + len(" VALUES ")
        depth, end = 0, opening
        for end in range(opening, len(self.sql)):
            depth += {"(": 1, ")": -1}.get(self.sql[end], 0)
            if depth == 0:
                break
        group, width = self.sql[opening : end + 1], len(self.columns)
        placeholders = [int(n) for n in _PLACEHOLDER.findall(group)]
        if placeholders != list(range(1, width + 1)):
            raise TypeError(f"not one $1..${width} VALUES group: {group[:80]}")
        parts = _PLACEHOLDER.split(group)  # text, number, text, number, ..., text
        groups = [
            "".join(
                part if index % 2 == 0 else f"${int(part) + k * width}"
                for index, part in enumerate(parts)
            )
            for k in range(count)
        ]
        statement = self.sql[:opening] + ", ".join(groups) + self.sql[end + 1 :]
        self.multi[count] = statement
        return statement

    @classmethod
    def of(
        cls,
        statement: Insert,
        keys: Sequence[str],
        engine: AsyncEngine,
        encoders: Mapping[str, Callable[[Any], Any]] | None = None,
    ) -> _Plan:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        order = compiled.positiontup
        if order is None:
            raise TypeError(f"{dialect.name}: a named paramstyle, not a positional one")
        table_columns = statement.table.c
        columns = []
        for key in order:
            processor: Callable[[Any], Any] | None = (
                table_columns[key].type.dialect_impl(dialect).bind_processor(dialect)
            )
            encoder = (encoders or {}).get(key)
            if encoder is not None and processor is not None:
                processor = _compose(encoder, processor)
            columns.append((key, encoder if processor is None else processor))
        return cls(str(compiled), tuple(columns))

    async def encode(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """The rows' parameters, yielding to the loop every ``ENCODE_SLICE_S``."""
        columns = self.columns
        params: list[tuple[Any, ...]] = []
        clock = time.perf_counter
        started = last = clock()
        for row in rows:
            get = row.get
            params.append(tuple([get(key) if p is None else p(get(key)) for key, p in columns]))
            now = clock()
            if 2 * now - last - started >= ENCODE_SLICE_S:  # the next row would pass it
                await asyncio.sleep(0)
                now = started = clock()
            last = now
        return params


_PLACEHOLDER = re.compile(r"\$(\d+)")


def _compose(first: Callable[[Any], Any], then: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: then(first(value))


@dataclass(frozen=True, slots=True)
class _Plans:
    calls: _Plan
    content: _Plan


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _take_write_lock(path: Path) -> None:
    """Take SQLite's write lock and release it; raise ``sqlite3.OperationalError`` ("database
    is locked") at once when another connection holds it. Never creates the file."""
    connection = sqlite3.connect(
        f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=0, isolation_level=None
    )
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    finally:
        connection.close()
