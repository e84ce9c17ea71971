"""The run journal: every run of the engine, and what it was about to do, so a killed run's record is finished.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zg_runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("commit_sha", sa.String(64), nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("pid_start", sa.String(32), nullable=False),
        sa.Column("started", sa.String(40), nullable=False),
        sa.Column("updated", sa.String(40), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
    )
    op.create_table(
        "zg_journal",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
    )
    op.create_index("ix_zg_journal_run_id", "zg_journal", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_zg_journal_run_id", "zg_journal")
    op.drop_table("zg_journal")
    op.drop_table("zg_runs")
