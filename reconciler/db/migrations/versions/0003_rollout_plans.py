"""Each rollout keeps the plan of every server's turn; the re-planning bookkeeping goes.

A rollout carries out what it was planned with (issue 8): `zg_rollout_plans` holds, per rollout and server, the
JSON of `core.plan.Restart` (files with old and new sha256, the service-sources block, the shared extra_paths it
writes or only restarts for, why, the paths). `zg_rollouts.hosts_written` and `zg_rollout_servers.wrote_shared`
were written by the old re-planning rollout and never read: dropped (when present; a store adopted from the tables
the code declares today never had them).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    op.create_table(
        "zg_rollout_plans",
        sa.Column("rollout_id", sa.String(32), primary_key=True),
        sa.Column("server", sa.String(200), primary_key=True),
        sa.Column("plan", sa.Text, nullable=False),
    )
    for table, column in (("zg_rollouts", "hosts_written"), ("zg_rollout_servers", "wrote_shared")):
        if column in _columns(table):
            with op.batch_alter_table(table) as batch:
                batch.drop_column(column)


def downgrade() -> None:
    with op.batch_alter_table("zg_rollout_servers") as batch:
        batch.add_column(sa.Column("wrote_shared", sa.Integer))
    with op.batch_alter_table("zg_rollouts") as batch:
        batch.add_column(sa.Column("hosts_written", sa.Text))
    op.drop_table("zg_rollout_plans")
