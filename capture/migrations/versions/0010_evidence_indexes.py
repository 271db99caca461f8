"""Indexes for the autopilot's evidence reads: ``feedback(created_at)`` and
``judgements(route, created_at)``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

The rollout controller reads new feedback and new judgements every few seconds by time
(``autopilot.evidence``); without these, each look scanned every feedback row, and every judged
pair of the route, ever stored. On PostgreSQL the feedback index is made on the partitioned
table, so every partition (and each one made later) has it.
"""

from __future__ import annotations

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_feedback_created_at", "feedback", ["created_at"])
    op.create_index("ix_judgements_route_created_at", "judgements", ["route", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_judgements_route_created_at", table_name="judgements")
    op.drop_index("ix_feedback_created_at", table_name="feedback")
