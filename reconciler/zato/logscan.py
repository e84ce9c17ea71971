"""Read a server's log for the verdict on hot-deployed modules. Pure: lines in, outcomes out.

Zato says a service is available only once every server logged that it deployed it. Each profile has its success
line and failure lines (docs/zato-facts.md section 3). A module with no service in it logs only
`No services nor models were deployed from module ...`: that is a success with no services unless a load error
for the same file came first. Lines are matched on the module's file name, since 3.2 logs the full path of the
deployed copy and 2.0/3.0 log the payload name; 4.1 may name the module without `.py`.

A load error is one record spanning many lines: ``Could not load source, file_name:`<path>`, e:`Traceback ...``
up to a line holding only a backtick. Zato logs that record twice; it is quoted once, whole, and belongs to the
module its first line names. Matching is done on lines stripped of colour codes (`clean_line`).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Literal

from reconciler.zato.profiles import Profile

Status = Literal["confirmed", "failed"]

#: ANSI escape sequences: CSI (`\x1b[1;37m`, what Zato 3.2 wraps log levels in), OSC, and two-byte escapes
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
#: what is left of control characters after that (a lone ESC, BEL, a CR from a CRLF line, ...); tab stays
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
#: a log record starts with its timestamp; other lines continue the record before (a traceback)
_RECORD = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")
#: how many lines of one module's load error (its traceback) are kept as evidence: a safety bound, not a cut
MAX_EVIDENCE = 400
#: the line that ends a multi-line ``e:`...` `` value: a backtick alone
_CLOSING = "`"


def _message(line: str) -> str:
    """The message of a record (`ts - LEVEL - pid:thread - logger:line - message`): two copies of one error differ
    in their time stamps and may differ in the logger's line number."""
    return line.split(" - ", 4)[-1]


def clean_line(line: str) -> str:
    """A log line as a person should see it: colour codes and other control characters removed. Every line the
    reconciler reads from a server's log passes through here, so none quoted anywhere carries an escape."""
    return _CONTROL.sub("", _ANSI.sub("", line))


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
        #: whether the record being read repeats one already kept for that module (Zato logs load errors twice)
        self._repeat = False
        #: every line read so far (the tail is quoted when a server never confirms)
        self.lines: list[str] = []

    def _module_of(self, path: str) -> str | None:
        name = posixpath.basename(path.strip())
        if name in self.pending:
            return name
        return f"{name}.py" if f"{name}.py" in self.pending else None  # 4.1 names the module, not the file

    def feed(self, lines: list[str]) -> None:
        for raw in lines:
            line = clean_line(raw)
            self.lines.append(line)
            if not self.pending:
                continue
            self._one(line)

    def _one(self, line: str) -> None:
        if self._continuing is not None:
            if not _RECORD.match(line):
                self._continue(line)
                return
            self._end_record()
        p = self.profile
        m = p.success.search(line)
        if m and (name := self._module_of(m.group("path"))):
            self._decide(name, "confirmed", line)
            return
        for failure in p.failures:
            m = failure.search(line)
            if m and (name := self._module_of(m.group("path"))):
                kept = self._errors.setdefault(name, [])
                self._repeat = _message(line) in (_message(k) for k in kept)
                self._continuing = name
                if not self._repeat:
                    kept.append(line)
                if p.version == "2.0":  # the WARN line is the whole verdict on 2.0
                    self._decide(name, "failed", line)
                if line.endswith(_CLOSING) and line.count(_CLOSING) % 2 == 0:  # a one-line record, closed
                    self._end_record()
                return
        m = p.nothing_deployed.search(line)
        if m and (name := self._module_of(m.group("path"))):
            self._decide(name, "failed" if name in self._errors else "confirmed", line)

    def _continue(self, line: str) -> None:
        """A line of the traceback being read; the lone backtick closes it."""
        assert self._continuing is not None
        if not self._repeat and len(self._errors[self._continuing]) < MAX_EVIDENCE:
            self._errors[self._continuing].append(line)
        if line.strip() == _CLOSING:
            self._end_record()

    def _end_record(self) -> None:
        self._continuing = None
        self._repeat = False

    def _decide(self, name: str, status: Status, line: str) -> None:
        self.verdicts[name] = Verdict(status, line, [*self._errors.get(name, []), line])
        self.pending.discard(name)

    @property
    def done(self) -> bool:
        return not self.pending
