"""Deploy records as git notes on the applied commit, pushed back to the services repository.

The history of what was deployed where belongs next to what was deployed, so every record goes into the note
of the commit it applied, under `refs/notes/zato-gitops`, and the ref is pushed to the origin:
`git log --notes=zato-gitops` is then the deploy history, readable by anyone with a clone and no database.

A note is JSON lines, one record per line, and the first key of every record is `at` (a fixed-width ISO-8601
UTC timestamp). That layout is what makes several writers safe: git's `cat_sort_uniq` notes merge strategy
concatenates two versions of a note, sorts the lines and drops duplicates, so two reconcilers (or one that
retries) appending to the same commit's note merge without conflict, and the sorted lines stay in time order.
Before writing, the origin's notes (fetched by `Source.fetch()`) are merged in; a push rejected because
someone else pushed notes first is answered by fetching, merging and pushing again.

A record is never lost to a remote we cannot write to (a read-only mirror, https without credentials, a
network outage): the note stays in the state clone and `PushResult.pushed` is False with the reason; the next
`record()` or `push_pending()` pushes everything, since it is all one ref.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from git.objects import Blob

from reconciler.errors import SourceError
from reconciler.gitrepo.records import Record
from reconciler.gitrepo.source import NOTES_REF, ORIGIN_NOTES_REF, GitResult, Source

log = logging.getLogger(__name__)

#: how many times a push rejected as non-fast-forward is retried after fetching and merging the origin's notes
PUSH_RETRIES = 3

MERGE_STRATEGY = "cat_sort_uniq"


@dataclass(frozen=True)
class PushResult:
    """Whether the notes ref reached the origin. When not, the records are safe in the state clone and
    `reason` says why (already redacted)."""

    pushed: bool
    reason: str = ""
    attempts: int = 0


@dataclass(frozen=True)
class HistoryEntry:
    """One deploy record with the commit it is attached to."""

    commit: str
    summary: str  # the commit's first message line; "" when the commit is not in the clone
    record: Mapping[str, Any]

    @property
    def at(self) -> str:
        return str(self.record.get("at", ""))

    @property
    def short(self) -> str:
        return self.commit[:12]

    @property
    def typed(self) -> Record:
        return Record.from_dict(self.record)


def format_at(moment: datetime) -> str:
    """Fixed-width UTC timestamp (`2024-05-01T12:00:00.000000Z`), so sorting the text sorts the time."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: one encoder for every note line (json.dumps with separators would make one per line: 20,000 on a first deploy)
_LINE = json.JSONEncoder(separators=(",", ":"), default=str)


def record_line(record: Mapping[str, Any], now: datetime) -> str:
    """One record as one JSON line with `at` first (taken from the record, else `now`)."""
    at = record.get("at", now)
    if isinstance(at, str) and next(iter(record)) == "at":
        ordered = record  # Record.to_dict() puts `at` first already
    else:
        ordered = {"at": format_at(at) if isinstance(at, datetime) else at,
                   **{k: v for k, v in record.items() if k != "at"}}
    return _LINE.encode(ordered)


def parse_note(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(line, record) for every line of a note that is a JSON object; other lines (a hand-written note) are
    skipped."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield line, value


class Audit:
    """Writes and reads the deploy notes of one `Source`'s state clone."""

    def __init__(self, source: Source, *, now: Callable[[], datetime] | None = None) -> None:
        self.source = source
        self._now = now or (lambda: datetime.now(UTC))

    # -- writing ------------------------------------------------------------------------------------------

    def record(self, commit: str, records: Sequence[Record]) -> PushResult:
        """Append `records` to the commit's note and push the notes to the origin.

        Raises `SourceError` only when the note cannot be written locally; a push that fails is reported in
        the result, never raised, because the records are kept and pushed later."""
        src = self.source
        with src.lock:
            sha = self._resolve(commit)
            if records:
                self._merge_origin()
                now = self._now()
                existing = self._note(NOTES_REF, sha)
                if existing and not existing.endswith("\n"):
                    existing += "\n"
                text = existing + "".join(record_line(r.to_dict(), now) + "\n" for r in records)
                with tempfile.TemporaryFile() as f:
                    f.write(text.encode("utf-8"))
                    f.seek(0)
                    added = src.git("notes", f"--ref={NOTES_REF}", "add", "-f", "-F", "-", sha, stdin=f)
                if not added.ok:
                    raise SourceError(f"cannot write the deploy note on {sha[:12]}: {added.message()}")
            return self._push()

    def pending(self) -> bool:
        """Whether the state clone holds notes the origin has not seen (as of the last fetch or push)."""
        src = self.source
        with src.lock:
            local = src.ref_sha(NOTES_REF)
            if local is None:
                return False
            origin = src.ref_sha(ORIGIN_NOTES_REF)
            return origin is None or not src.git("merge-base", "--is-ancestor", local, origin).ok

    def push_pending(self) -> PushResult:
        """Push notes left behind by an earlier failed push; a no-op (pushed=True) when there are none."""
        with self.source.lock:
            if not self.pending():
                return PushResult(True, "nothing to push", 0)
            self._merge_origin()
            return self._push()

    def _resolve(self, commit: str) -> str:
        result = self.source.git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
        if not result.ok or not result.out.strip():
            raise SourceError(f"cannot record on {commit}: the commit is not in the clone of "
                              f"{self.source.safe_url}")
        return result.out.strip()

    def _note(self, ref: str, sha: str) -> str:
        shown = self.source.git("notes", f"--ref={ref}", "show", sha)
        if shown.ok:
            return shown.out
        if "no note found" in shown.err.lower() or self.source.ref_sha(ref) is None:
            return ""
        raise SourceError(f"cannot read the deploy note on {sha[:12]}: {shown.message()}")

    def _merge_origin(self) -> None:
        """Merge the origin's notes (as last fetched) into ours. A failure is logged, not raised: our records
        are written anyway and the merge is tried again before the next push."""
        src = self.source
        origin = src.ref_sha(ORIGIN_NOTES_REF)
        if origin is None:
            return
        local = src.ref_sha(NOTES_REF)
        if local is None:
            src.git("update-ref", NOTES_REF, origin)
            return
        if local == origin or src.git("merge-base", "--is-ancestor", origin, local).ok:
            return
        merged = self._notes_merge()
        if not merged.ok and "previous notes merge" in (merged.err + merged.out):
            # a merge interrupted by a crash left its state behind; start it again
            src.git("notes", f"--ref={NOTES_REF}", "merge", "--abort")
            merged = self._notes_merge()
        if not merged.ok:
            log.warning("cannot merge the origin's deploy notes: %s", merged.message())

    def _notes_merge(self) -> GitResult:
        return self.source.git(
            "notes", f"--ref={NOTES_REF}", "merge", "--quiet", "-s", MERGE_STRATEGY, ORIGIN_NOTES_REF
        )

    def _push(self) -> PushResult:
        src = self.source
        local = src.ref_sha(NOTES_REF)
        if local is None:
            return PushResult(True, "nothing to push", 0)
        reason = ""
        for attempt in range(1, PUSH_RETRIES + 2):
            pushed = src.git("push", "--porcelain", "origin", f"{NOTES_REF}:{NOTES_REF}")
            if pushed.ok:
                src.git("update-ref", ORIGIN_NOTES_REF, src.ref_sha(NOTES_REF) or local)
                return PushResult(True, "", attempt)
            output = pushed.out + "\n" + pushed.err
            if "[rejected]" in output and ("fetch first" in output or "non-fast-forward" in output):
                reason = f"the origin's notes kept moving ({attempt} pushes rejected as non-fast-forward)"
                fetched = src.git("fetch", "--no-tags", "origin", f"+{NOTES_REF}:{ORIGIN_NOTES_REF}")
                if not fetched.ok:
                    reason = f"cannot fetch the origin's notes from {src.safe_url}: {fetched.message()}"
                    break
                self._merge_origin()
                continue
            reason = f"cannot push the deploy notes to {src.safe_url}: {pushed.message()}"
            break
        log.warning("deploy notes kept in %s, not pushed: %s", src.path, reason)
        return PushResult(False, reason, attempt)

    # -- reading ------------------------------------------------------------------------------------------

    def _all_notes(self) -> dict[str, dict[str, dict[str, Any]]]:
        """commit sha -> {line: record} over our notes and the origin's, duplicates removed."""
        src = self.source
        out: dict[str, dict[str, dict[str, Any]]] = {}
        with src.lock:
            for ref in (NOTES_REF, ORIGIN_NOTES_REF):
                ref_sha = src.ref_sha(ref)
                if ref_sha is None:
                    continue
                for item in src.repo.commit(ref_sha).tree.traverse():
                    if not isinstance(item, Blob):
                        continue
                    commit = str(item.path).replace("/", "")  # notes trees fan out as ab/cdef...
                    text = item.data_stream.read().decode("utf-8", "replace")
                    lines = out.setdefault(commit, {})
                    for line, rec in parse_note(text):
                        lines.setdefault(line, rec)
        return out

    def history(self, limit: int | None = None, cluster: str | None = None) -> list[HistoryEntry]:
        """Every deploy record, newest first, optionally only those of one cluster."""
        entries: list[tuple[str, dict[str, Any]]] = []
        for commit, lines in self._all_notes().items():
            for rec in lines.values():
                if cluster is None or rec.get("cluster") == cluster:
                    entries.append((commit, rec))
        # newest first; records with the same `at` (one batch) in reverse note order, later lines being later
        order = {id(rec): i for i, (_, rec) in enumerate(entries)}
        entries.sort(key=lambda e: (str(e[1].get("at", "")), order[id(e[1])]), reverse=True)
        if limit is not None:
            entries = entries[: max(limit, 0)]
        summaries: dict[str, str] = {}
        out = []
        for commit, rec in entries:
            if commit not in summaries:
                summaries[commit] = self.source.summary(commit) or ""
            out.append(HistoryEntry(commit, summaries[commit], rec))
        return out

    def records_for(self, commit: str) -> list[dict[str, Any]]:
        """The records on one commit (ours and the origin's), oldest first."""
        with self.source.lock:
            sha = self._resolve(commit)
            lines: dict[str, dict[str, Any]] = {}
            for ref in (NOTES_REF, ORIGIN_NOTES_REF):
                if self.source.ref_sha(ref) is not None:
                    for line, rec in parse_note(self._note(ref, sha)):
                        lines.setdefault(line, rec)
        return sorted(lines.values(), key=lambda r: str(r.get("at", "")))
