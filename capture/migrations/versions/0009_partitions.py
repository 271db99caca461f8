"""Calls and feedback partitioned by time (PostgreSQL); ``content.last_seen`` for the collector.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

PostgreSQL: ``calls`` and ``feedback`` become range-partitioned on ``created_at``
(``capture.partitions``), so that retention drops whole partitions instead of DELETE + VACUUM.
In the migration's one transaction (nothing changes if it fails; writers wait for it): each
table is created anew as a partitioned table with the same columns in the same order (``LIKE``),
given one partition per UTC day from its oldest row to three days ahead plus a DEFAULT
partition, filled from the old table one day at a time (``INSERT ... SELECT *``: every value
copied as stored), the old table dropped and the new one renamed in its place; then the primary
keys (now ``(id, created_at)``: a partitioned table's unique keys must hold the partition key),
the indexes (the dashboard's of migration 0003 included) and the dashboard rollup's triggers
are made again. ``feedback.id`` keeps its sequence. The foreign key from ``feedback.request_id``
to ``calls.id`` cannot exist any more (``calls.id`` alone is not unique to PostgreSQL) and is
dropped on both backends, so that ``capture/schema.py`` describes both. The copy costs about
what writing the rows did; plan the upgrade of a large store. The dashboard's rollup is not
touched: the rows are the same.

Both backends: ``content.last_seen`` (a UTC day) is set to the day of the upgrade for the parts
already stored (the calls referring to them may be as new as that); the writer refreshes it at
most once a day per part, and the collector deletes parts not seen since the oldest call kept.

The downgrade copies the rows back into plain tables (failing if two calls share an id, which
the partitioned layout allows in principle) and drops ``last_seen``.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

from capture.dashboard_rollup import INDEXES as DASHBOARD_INDEXES
from capture.dashboard_rollup import UPGRADE as DASHBOARD_UPGRADE
from capture.partitions import AHEAD, BEHIND, TABLES, partition_name, period_end, period_start

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

INDEXES = {
    "calls": (
        ("ix_calls_created_at", "created_at"),
        ("ix_calls_route_variant_created_at", "route, variant, created_at"),
        ("ix_calls_upstream_model_created_at", "upstream_model, created_at"),
        ("ix_calls_shadow_of", "shadow_of"),
    ),
    "feedback": (("ix_feedback_request_id", "request_id"),),
}
FK = "fk_feedback_request_id_calls"


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _literal(moment: dt.datetime) -> str:
    return f"'{moment.astimezone(dt.UTC).isoformat()}'"


def _dashboard_triggers() -> list[str]:
    return [s for s in DASHBOARD_UPGRADE if s.strip().startswith("CREATE TRIGGER")]


def _days(table: str) -> list[tuple[dt.datetime, dt.datetime]]:
    """UTC days from ``table``'s oldest row (or yesterday) to ``AHEAD`` after now."""
    now = dt.datetime.now(dt.UTC)
    oldest = op.get_bind().scalar(sa.text(f"SELECT min(created_at) FROM {table}"))
    newest = op.get_bind().scalar(sa.text(f"SELECT max(created_at) FROM {table}"))
    low = min(x for x in (oldest, now - BEHIND) if x is not None)
    high = max(x for x in (newest, now + AHEAD) if x is not None)
    days = []
    at = period_start(low, "day")
    while at <= high:
        days.append((at, period_end(at, "day")))
        at = period_end(at, "day")
    return days


def _keys_and_indexes(table: str) -> None:
    primary = "id, created_at" if _partitioned_now(table) else "id"
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY ({primary})")
    for name, columns in INDEXES[table]:
        op.execute(f"CREATE INDEX {name} ON {table} ({columns})")


def _partitioned_now(table: str) -> bool:
    kind = op.get_bind().scalar(
        sa.text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}
    )
    return bool(kind == "p")


def _rebuild(table: str, partitioned: bool) -> None:
    """``table`` made again (partitioned by day, or plain), every row copied, in its place."""
    new = f"{table}_{'partitioned' if partitioned else 'plain'}"
    layout = " PARTITION BY RANGE (created_at)" if partitioned else ""
    op.execute(
        f"CREATE TABLE {new} (LIKE {table} INCLUDING DEFAULTS INCLUDING STORAGE"
        f" INCLUDING COMPRESSION){layout}"
    )
    if partitioned:
        days = _days(table)
        for start, end in days:
            op.execute(
                f"CREATE TABLE {partition_name(table, start)} PARTITION OF {new}"
                f" FOR VALUES FROM ({_literal(start)}) TO ({_literal(end)})"
            )
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {new} DEFAULT")
        for start, end in days:
            op.execute(
                f"INSERT INTO {new} SELECT * FROM {table}"
                f" WHERE created_at >= {_literal(start)} AND created_at < {_literal(end)}"
            )
        # Whatever no day holds (none: the days span min to max; but never lose a row).
        op.execute(
            f"INSERT INTO {new} SELECT * FROM {table} WHERE created_at"
            f" < {_literal(days[0][0])} OR created_at >= {_literal(days[-1][1])}"
        )
    else:
        op.execute(f"INSERT INTO {new} SELECT * FROM {table}")
    if table == "feedback":
        op.execute("ALTER SEQUENCE feedback_id_seq OWNED BY NONE")
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {new} RENAME TO {table}")
    if table == "feedback":
        op.execute("ALTER SEQUENCE feedback_id_seq OWNED BY feedback.id")
    _keys_and_indexes(table)


def _last_seen_up() -> None:
    op.add_column("content", sa.Column("last_seen", sa.Date(), nullable=True))
    today = dt.datetime.now(dt.UTC).date()
    op.execute(
        sa.text("UPDATE content SET last_seen = :today").bindparams(
            sa.bindparam("today", today, type_=sa.Date())
        )
    )
    with op.batch_alter_table("content") as batch:
        batch.alter_column("last_seen", existing_type=sa.Date(), nullable=False)
    op.create_index("ix_content_last_seen", "content", ["last_seen"])


def upgrade() -> None:
    _last_seen_up()
    if not _postgresql():
        with op.batch_alter_table("feedback") as batch:
            batch.drop_constraint(FK, type_="foreignkey")
        return
    op.execute(f"ALTER TABLE feedback DROP CONSTRAINT {FK}")
    for table in TABLES:
        _rebuild(table, partitioned=True)
    for statement in (*DASHBOARD_INDEXES, *_dashboard_triggers()):
        op.execute(statement)


def downgrade() -> None:
    if _postgresql():
        for table in reversed(TABLES):
            _rebuild(table, partitioned=False)
        for statement in (*DASHBOARD_INDEXES, *_dashboard_triggers()):
            op.execute(statement)
        op.execute(
            f"ALTER TABLE feedback ADD CONSTRAINT {FK} FOREIGN KEY (request_id)"
            " REFERENCES calls (id) ON DELETE CASCADE"
        )
    else:
        with op.batch_alter_table("feedback") as batch:
            batch.create_foreign_key(FK, "calls", ["request_id"], ["id"], ondelete="CASCADE")
    op.drop_index("ix_content_last_seen", table_name="content")
    with op.batch_alter_table("content") as batch:
        batch.drop_column("last_seen")
