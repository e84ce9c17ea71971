"""The fact cache in the state dir: what a module's bytes say (sha256, compile verdict), by git blob id.

Compiling thousands of modules costs seconds on every reconcile; a blob's bytes never change, so their facts are
computed once and kept in `<state_dir>/facts.json`. `core/desired.py` stays pure and sees only its `FactCache`
protocol; this file is the I/O behind it. A compile verdict depends on the Python that compiled it, so the file
is keyed by the reconciler's Python version too: another version starts afresh. It is only a cache: a missing,
unreadable or foreign file is ignored, two reconcilers saving at once cost each other some entries, never a
wrong answer (every entry is written whole, by rename).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from reconciler.core.desired import Facts

log = logging.getLogger(__name__)

#: bump when what a Facts holds, or how it is computed, changes
FORMAT = 1
#: entries kept: the ones used since the process started first, then the most recent others
LIMIT = 50_000


def _python() -> str:
    return f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}"


def write_json(path: Path, body: object) -> None:
    """Replace `path` with `body` as JSON, atomically (a temporary file in the same dir, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(body, f, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class FactFile:
    """A FactCache kept in one JSON file, loaded on first use and written back by `save()` when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._facts: dict[str, Facts] | None = None
        self._used: set[str] = set()
        self._dirty = False
        self._lock = threading.Lock()
        #: facts computed (cache misses) since this object was made: what a build really cost
        self.computed = 0

    def _load(self) -> dict[str, Facts]:
        if self._facts is not None:
            return self._facts
        facts: dict[str, Facts] = {}
        try:
            raw: Any = json.loads(self.path.read_text())
            if raw.get("format") == FORMAT and raw.get("python") == _python():
                for blob, (sha, problems) in raw["facts"].items():
                    facts[blob] = Facts(str(sha), tuple(str(p) for p in problems))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("ignoring the fact cache %s: %s", self.path, e)
            facts = {}
        self._facts = facts
        return facts

    def get(self, blob: str) -> Facts | None:
        with self._lock:
            found = self._load().get(blob)
            if found is not None:
                self._used.add(blob)
            return found

    def put(self, blob: str, facts: Facts) -> None:
        with self._lock:
            self._load()[blob] = facts
            self._used.add(blob)
            self._dirty = True
            self.computed += 1

    def save(self) -> None:
        """Write the file (atomically) if anything was added; failures only cost the next run some work."""
        with self._lock:
            if not self._dirty or self._facts is None:
                return
            facts = self._facts
            keep = [b for b in facts if b in self._used]
            keep += [b for b in reversed(list(facts)) if b not in self._used][: max(0, LIMIT - len(keep))]
            body = {"format": FORMAT, "python": _python(),
                    "facts": {b: [facts[b].sha256, list(facts[b].problems)] for b in keep}}
            try:
                write_json(self.path, body)
            except OSError as e:
                log.warning("cannot save the fact cache %s: %s", self.path, e)
                return
            self._dirty = False
