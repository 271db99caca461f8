"""Create the calls and feedback tables.

Revision ID: 0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endpoint", sa.String(16), nullable=False),
        sa.Column("route", sa.String(200)),
        sa.Column("variant", sa.String(200)),
        sa.Column("provider", sa.String(200)),
        sa.Column("requested_model", sa.String(200)),
        sa.Column("upstream_model", sa.String(200)),
        sa.Column("request", _json()),
        sa.Column("response", _json()),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("finish_reason", sa.String(40)),
        sa.Column("prompt_tokens", sa.Integer()),
        sa.Column("completion_tokens", sa.Integer()),
        sa.Column("cached_tokens", sa.Integer()),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float()),
        sa.Column("upstream_ms", sa.Float()),
        sa.Column("overhead_ms", sa.Float(), nullable=False),
        sa.Column("user_key", sa.String(200)),
        sa.Column("tags", _json(), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("shadow_of", sa.String(32)),
        sa.Column("cache_hit", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
    )
    op.create_index("ix_calls_created_at", "calls", ["created_at"])
    op.create_index(
        "ix_calls_route_variant_created_at", "calls", ["route", "variant", "created_at"]
    )
    op.create_index("ix_calls_upstream_model_created_at", "calls", ["upstream_model", "created_at"])
    op.create_index("ix_calls_shadow_of", "calls", ["shadow_of"])
    op.create_table(
        "feedback",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("label", sa.String(100)),
        sa.Column("comment", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["calls.id"],
            name="fk_feedback_request_id_calls",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("calls")
