"""Calls in every provider's dialect: ``dialect``, ``upstream_api``, ``cache_write_tokens`` and
the normalised chat view ``normalized`` on ``calls``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

Four nullable columns, added without rewriting the table on either backend (PostgreSQL adds a
nullable column without a default in the catalogue only). Rows written before have NULL in
all four: ``dialect`` and ``upstream_api`` NULL mean "openai", the only dialect there was.
The downgrade drops them (SQLite: ``ALTER TABLE ... DROP COLUMN``, 3.35 or newer, so the table
is not copied and its feedback rows are kept).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = ("dialect", "upstream_api", "cache_write_tokens", "normalized")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("calls", sa.Column("dialect", sa.String(16)))
    op.add_column("calls", sa.Column("upstream_api", sa.String(16)))
    op.add_column("calls", sa.Column("cache_write_tokens", sa.Integer()))
    op.add_column("calls", sa.Column("normalized", _json()))


def downgrade() -> None:
    for column in reversed(COLUMNS):
        op.drop_column("calls", column)
