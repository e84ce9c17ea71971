"""Read a server's log for the verdict on hot-deployed modules. Pure: lines in, outcomes out.

Zato says a service is available only once every server logged that it deployed it. Each profile has its success
line and failure lines (docs/zato-facts.md section 3). A module with no service in it logs only
`No services nor models were deployed from module ...`: that is a success with no services unless a load error
for the same file came first. Lines are matched on the module's file name, since 3.2 logs the full path of the
deployed copy and 2.0/3.0 log the payload name.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Literal

from reconciler.zato.profiles import Profile

Status = Literal["confirmed", "failed"]

#: a log record starts with its timestamp; other lines continue the record before (a traceback)
_RECORD = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")
#: how many lines of one module's load error (its traceback) are kept as evidence
MAX_EVIDENCE = 30


@dataclass
class Verdict:
    status: Status
    line: str
    #: every line that mentioned the module (failures quote them)
    evidence: list[str] = field(default_factory=list)


class ConfirmScanner:
    """Feed it a server's new log lines; it remembers, per module file name, the first verdict."""

    def __init__(self, profile: Profile, modules: set[str]) -> None:
        self.profile = profile
        self.pending = set(modules)
        self.verdicts: dict[str, Verdict] = {}
        self._errors: dict[str, list[str]] = {}
        #: the module whose load error the following non-record lines (its traceback) belong to
        self._continuing: str | None = None
        #: every line read so far (the tail is quoted when a server never confirms)
        self.lines: list[str] = []

    def _module_of(self, path: str) -> str | None:
        name = posixpath.basename(path.strip())
        return name if name in self.pending else None

    def feed(self, lines: list[str]) -> None:
        for line in lines:
            self.lines.append(line)
            if not self.pending:
                continue
            self._one(line)

    def _one(self, line: str) -> None:
        if self._continuing is not None and not _RECORD.match(line):
            kept = self._errors[self._continuing]
            if len(kept) < MAX_EVIDENCE:
                kept.append(line)
            return
        self._continuing = None
        p = self.profile
        m = p.success.search(line)
        if m and (name := self._module_of(m.group("path"))):
            self._decide(name, "confirmed", line)
            return
        for failure in p.failures:
            m = failure.search(line)
            if m and (name := self._module_of(m.group("path"))):
                self._errors.setdefault(name, []).append(line)
                self._continuing = name
                if p.version == "2.0":  # the WARN line is the whole verdict on 2.0
                    self._decide(name, "failed", line)
                return
        m = p.nothing_deployed.search(line)
        if m and (name := self._module_of(m.group("path"))):
            self._decide(name, "failed" if name in self._errors else "confirmed", line)

    def _decide(self, name: str, status: Status, line: str) -> None:
        self.verdicts[name] = Verdict(status, line, [*self._errors.get(name, []), line])
        self.pending.discard(name)

    @property
    def done(self) -> bool:
        return not self.pending
