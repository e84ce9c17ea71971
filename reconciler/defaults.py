"""Defaults that must be known before the settings are loaded: the state dir, where an apply looks for its
no-op memo (`engine/noop.py`) without loading pydantic and the settings model."""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "zato-gitops"
