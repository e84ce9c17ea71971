"""The state database: its schema, its migrations, and leader election on it."""

from __future__ import annotations


def first_line(e: BaseException) -> str:
    """A database error in one line: the driver's own words (no SQLAlchemy background link, no statement)."""
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__
