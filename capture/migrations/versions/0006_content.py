"""Large repeated parts of requests stored once: the ``content`` table and ``calls.content_refs``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

A new table and a nullable column (PostgreSQL adds it in the catalogue only, without rewriting
``calls``). Rows written before have ``content_refs`` NULL: their request is read as stored.
``content.body`` holds each part's compact JSON compressed (zlib, ``capture.content``). The
downgrade first puts every referenced part back in place (in pages of 500 calls), so no
record changes, then drops the column and the table.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

PAGE = 500


def _json() -> sa.types.TypeEngine[Any]:
    jsonb = postgresql.JSONB(none_as_null=True)
    return sa.JSON(none_as_null=True).with_variant(jsonb, "postgresql")


def upgrade() -> None:
    op.create_table(
        "content",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("hash", name="pk_content"),
    )
    op.add_column("calls", sa.Column("content_refs", sa.Boolean()))


def _inline_references() -> None:
    from capture.content import decode, row_references, substitute_row

    bind = op.get_bind()
    calls = sa.table(
        "calls",
        sa.column("id", sa.String()),
        sa.column("request", _json()),
        sa.column("response", _json()),
        sa.column("normalized", _json()),
        sa.column("content_refs", sa.Boolean()),
    )
    content = sa.table(
        "content", sa.column("hash", sa.String()), sa.column("body", sa.LargeBinary())
    )
    last = ""
    while True:
        rows = [
            dict(row)
            for row in bind.execute(
                sa.select(calls.c.id, calls.c.request, calls.c.response, calls.c.normalized)
                .where(calls.c.content_refs.is_(True), calls.c.id > last)
                .order_by(calls.c.id)
                .limit(PAGE)
            ).mappings()
        ]
        if not rows:
            return
        last = rows[-1]["id"]
        hashes: set[str] = set()
        for row in rows:
            hashes |= row_references(row)
        found: dict[str, Any] = {}
        if hashes:
            query = sa.select(content.c.hash, content.c.body).where(content.c.hash.in_(hashes))
            dialect = bind.dialect.name
            found = {digest: decode(body, dialect) for digest, body in bind.execute(query)}
        for row in rows:
            substitute_row(row, found)
            bind.execute(
                calls.update().where(calls.c.id == row.pop("id")).values(**row, content_refs=None)
            )


def downgrade() -> None:
    _inline_references()
    op.drop_column("calls", "content_refs")
    op.drop_table("content")
