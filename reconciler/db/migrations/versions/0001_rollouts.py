"""The rollout store's tables, as `create_all` made them before migrations existed.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zg_rollouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("cluster", sa.String(200), nullable=False),
        sa.Column("commit_sha", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("window", sa.String(100)),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("updated", sa.String(40), nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("hosts_written", sa.Text),
    )
    op.create_table(
        "zg_rollout_servers",
        sa.Column("rollout_id", sa.String(32), primary_key=True),
        sa.Column("server", sa.String(200), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("step", sa.String(20), nullable=False),
        sa.Column("wrote_shared", sa.Integer),
        sa.Column("log_size", sa.Integer),
        sa.Column("log_inode", sa.Integer),
        sa.Column("started", sa.String(40)),
        sa.Column("ready", sa.String(40)),
        sa.Column("detail", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("zg_rollout_servers")
    op.drop_table("zg_rollouts")
