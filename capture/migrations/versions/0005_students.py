"""Registered students and their lineage: the ``students`` table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "students",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("variant", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(200)),
        sa.Column("backend", sa.String(40)),
        sa.Column("base_model", sa.String(200)),
        sa.Column("parent_model", sa.String(200)),
        sa.Column("job_id", sa.String(200)),
        sa.Column("lineage", _json()),
        sa.PrimaryKeyConstraint("id", name="pk_students"),
    )
    op.create_index(
        "ix_students_route_variant_created_at", "students", ["route", "variant", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_students_route_variant_created_at", table_name="students")
    op.drop_table("students")
