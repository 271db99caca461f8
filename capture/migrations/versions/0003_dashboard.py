"""The dashboard's indexes and hourly rollup (PostgreSQL only; nothing on SQLite).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

``CREATE INDEX`` holds writes to ``calls`` while it builds, and the rollup is filled from the
calls already stored (about 5 s per million rows): plan the upgrade of a large store.
"""

from __future__ import annotations

from alembic import op

from capture.dashboard_rollup import DOWNGRADE, DROP_INDEXES, INDEXES, UPGRADE

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    for statement in (*INDEXES, *UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    if not _postgresql():
        return
    for statement in (*DOWNGRADE, *DROP_INDEXES):
        op.execute(statement)
