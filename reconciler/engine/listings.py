"""What each server's deployed and pickup dirs held when last observed, so the next observe can say what it expects.

A no-op at 50 servers x 5,000 modules moved 21 MB of `sha256  name` lines through SSH and parsed them, to learn
that nothing had changed (issue 9: the cost must not grow with the repository). Now observe sends the digest of
the listing it expects and the server answers `@@same` when it is right (`observe.py`). What to expect is kept
here, in `<state_dir>/listings.json`, per cluster/server and listing, as a difference from the desired modules:
`extra` (file name -> sha256 of what is there and is not that desired module's bytes: Zato's demo.py, an older
version) and `present` or `absent` (the desired modules there, or those not there), whichever is shorter. So a
synced server costs a few names, whatever the number of modules.

It is only ever a guess: the server checks it by digest, and a guess that is wrong, stale, lost or edited costs
one full listing, never a wrong plan.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.core.state import DesiredCluster, ObservedServer
from reconciler.engine.facts import write_json
from reconciler.observe import LISTINGS, Expected, listed

log = logging.getLogger(__name__)

FORMAT = 1


def _sections(dc: DesiredCluster, observed: ObservedServer) -> dict[str, Mapping[str, str]]:
    """The listings observe returns (`observe.listed`), as observed."""
    return {k: observed.deployed if k == "current" else observed.pickup for k in listed(dc.profile.deployed_in)}


class Listings:
    """`expected` before observing a server, `remember` after, `save` at the end of the run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, dict[str, Any]] | None = None
        self._dirty = False
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            data: dict[str, dict[str, Any]] = {}
            try:
                raw = json.loads(self.path.read_text())
                if isinstance(raw, dict) and raw.get("format") == FORMAT and isinstance(raw.get("servers"), dict):
                    data = raw["servers"]
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as e:
                log.warning("ignoring %s: %s", self.path, e)
            self._data = data
        return self._data

    def expected(self, dc: DesiredCluster, server: str) -> Expected | None:
        with self._lock:
            entry = self._load().get(f"{dc.name}/{server}")
        if not isinstance(entry, dict):
            return None
        want = {name: m.sha256 for name, m in dc.modules.items()}
        out: dict[str, dict[str, str]] = {}
        for section in LISTINGS:
            kept = entry.get(section)
            if not isinstance(kept, dict):
                continue
            try:
                if "present" in kept:
                    listing = {n: want[n] for n in kept["present"] if n in want}
                else:
                    absent = set(kept["absent"])
                    listing = {n: sha for n, sha in want.items() if n not in absent}
                listing.update({str(n): str(sha) for n, sha in kept["extra"].items()})
            except (KeyError, TypeError, AttributeError):
                continue
            out[section] = listing
        return out or None

    def remember(self, dc: DesiredCluster, observed: ObservedServer) -> None:
        want = {name: m.sha256 for name, m in dc.modules.items()}
        entry: dict[str, Any] = {}
        for section, listing in _sections(dc, observed).items():
            present = [n for n, sha in want.items() if listing.get(n) == sha]
            kept: dict[str, Any] = {"extra": {n: sha for n, sha in listing.items() if want.get(n) != sha}}
            if len(present) <= len(want) - len(present):
                kept["present"] = present
            else:
                kept["absent"] = [n for n in want if listing.get(n) != want[n]]
            entry[section] = kept
        key = f"{dc.name}/{observed.server.name}"
        with self._lock:
            data = self._load()
            if data.get(key) != entry:
                data[key] = entry
                self._dirty = True

    def save(self) -> None:
        """Write the file if anything changed; a failure only costs the next observe full listings."""
        with self._lock:
            if not self._dirty or self._data is None:
                return
            try:
                write_json(self.path, {"format": FORMAT, "servers": self._data})
            except OSError as e:
                log.warning("cannot save %s: %s", self.path, e)
                return
            self._dirty = False
