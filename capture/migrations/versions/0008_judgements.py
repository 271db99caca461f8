"""The autopilot's judged pairs (``judgements``) and a rollout's pending abort (``rollouts.abort``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

A new table and a nullable column; nothing existing changes.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "judgements",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("slice", sa.String(400), nullable=False),
        sa.Column("incumbent_call", sa.String(32), nullable=False),
        sa.Column("candidate_call", sa.String(32), nullable=False),
        sa.Column("incumbent", sa.String(200), nullable=False),
        sa.Column("candidate", sa.String(200), nullable=False),
        sa.Column("verdict", sa.String(20)),
        sa.Column("judge_calls", _json()),
        sa.Column("checks", _json()),
        sa.Column("reason", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_judgements"),
        sa.UniqueConstraint("incumbent_call", "candidate_call", name="uq_judgements_pair"),
    )
    op.create_index("ix_judgements_route_id", "judgements", ["route", "id"])
    op.add_column("rollouts", sa.Column("abort", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("rollouts", "abort")
    op.drop_index("ix_judgements_route_id", table_name="judgements")
    op.drop_table("judgements")
