"""The state database: its schema, its migrations, and leader election on it."""

from __future__ import annotations

import sys


def first_line(e: BaseException) -> str:
    """A database error in one line: the driver's own words (no SQLAlchemy background link, no statement)."""
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def db_errors() -> tuple[type[Exception], ...]:
    """SQLAlchemy's error class, for `except db_errors():` and `isinstance(e, db_errors())`, without importing
    SQLAlchemy (~0.1 s) to ask: if `sqlalchemy.exc` was never imported, no database was touched, so no error can
    be one (and the empty tuple matches nothing)."""
    exc = sys.modules.get("sqlalchemy.exc")
    return (exc.SQLAlchemyError,) if exc is not None else ()
