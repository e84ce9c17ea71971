"""Alembic's entry point for the state database: run the revisions on the connection `db/migrate.py` hands over.

`target_metadata` is every table the code declares (the rollout store's and the status table), so
`alembic revision --autogenerate` and the head-versus-metadata unit test see the same thing. APScheduler's own
table is left out of the comparison: APScheduler creates it.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import reconciler.apply.store  # noqa: F401  (declares the rollout tables on the metadata)
from reconciler.db.schema import FOREIGN_TABLES, metadata

target_metadata = metadata


def include_name(name: str | None, type_: Any, _parents: MutableMapping[Any, str | None]) -> bool:
    return not (type_ == "table" and name in FOREIGN_TABLES)


def run() -> None:
    conn = context.config.attributes.get("connection")
    if conn is None:  # the alembic command line: `-x url=...`
        url = context.get_x_argument(as_dictionary=True)["url"]
        with create_engine(url, poolclass=NullPool).connect() as own:
            context.configure(connection=own, target_metadata=target_metadata, include_name=include_name)
            with context.begin_transaction():
                context.run_migrations()
            own.commit()
        return
    context.configure(connection=conn, target_metadata=target_metadata, include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


run()
