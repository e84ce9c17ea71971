"""Deploy notes against real git: records reach the origin's `refs/notes/zato-gitops`, two reconcilers writing
to the same commit both survive (the `cat_sort_uniq` merge path), and a remote that refuses pushes keeps the
records locally until a later push sends them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.gitrepo.notes import Audit, format_at, record_line
from reconciler.gitrepo.records import Record
from reconciler.gitrepo.source import Source
from tests.unit.gitbed import GitBed, git

pytestmark = pytest.mark.usefixtures("hermetic_git")


class Clock:
    """A clock that moves one second per reading, so every record has its own `at`."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def sources(bed: GitBed) -> Iterator[list[Source]]:
    made: list[Source] = []
    yield made
    for s in made:
        s.close()


def reconciler(bed: GitBed, sources: list[Source], clock: Clock, name: str) -> tuple[Source, Audit]:
    src = bed.source(name)
    sources.append(src)
    return src, Audit(src, now=clock)


def origin_note(bed: GitBed, commit: str) -> list[dict[str, object]]:
    text = git("--git-dir", str(bed.origin), "notes", "--ref", "zato-gitops", "show", commit)
    return [json.loads(line) for line in text.splitlines()]


def deploy(server: str, **extra: object) -> Record:
    return Record.from_dict({"run": "r1", "cluster": "c1", "server": server, "action": "hot-deploy",
                             "outcome": "confirmed", **extra})


def test_record_puts_the_note_on_the_origin(bed: GitBed, sources: list[Source], clock: Clock) -> None:
    head = bed.commit({"services/crm.py": "# crm\n"}, "add crm")
    src, audit = reconciler(bed, sources, clock, "a")
    src.fetch()
    result = audit.record(head, [deploy("s1", module="services/crm.py"), deploy("s2")])
    assert result.pushed and result.attempts == 1 and result.reason == ""
    raw = git("--git-dir", str(bed.origin), "notes", "--ref", "zato-gitops", "show", head)
    lines = raw.splitlines()
    assert len(lines) == 2 and all(line.startswith('{"at":"2024-05-01T12:00:01.000000Z"') for line in lines)
    assert [r["server"] for r in origin_note(bed, head)] == ["s1", "s2"]
    log = git("--git-dir", str(bed.origin), "log", "--notes=zato-gitops", "-1", "main")
    assert "Notes (zato-gitops):" in log and '"server":"s1"' in log
    assert not audit.pending()

    # a second deploy on the same commit appends to the note
    assert audit.record(head, [deploy("s3")]).pushed
    assert [r["server"] for r in origin_note(bed, head)] == ["s1", "s2", "s3"]


def test_two_reconcilers_on_the_same_commit_both_reach_the_origin(
    bed: GitBed, sources: list[Source], clock: Clock
) -> None:
    head = bed.commit({"services/crm.py": "# crm\n"}, "add crm")
    a_src, a = reconciler(bed, sources, clock, "a")
    b_src, b = reconciler(bed, sources, clock, "b")
    a_src.fetch()
    b_src.fetch()

    assert a.record(head, [deploy("from-a")]).pushed
    # b has not fetched since a pushed: its push is rejected, it fetches, merges with cat_sort_uniq, pushes again
    result = b.record(head, [deploy("from-b")])
    assert result.pushed and result.attempts == 2
    # and a, stale too, does the same
    result = a.record(head, [deploy("from-a-again")])
    assert result.pushed and result.attempts == 2
    assert [r["server"] for r in origin_note(bed, head)] == ["from-a", "from-b", "from-a-again"]

    # a reconciler that fetched first merges before writing and pushes at once
    c_src, c = reconciler(bed, sources, clock, "c")
    c_src.fetch()
    result = c.record(head, [deploy("from-c")])
    assert result.pushed and result.attempts == 1
    assert [r["server"] for r in origin_note(bed, head)] == ["from-a", "from-b", "from-a-again", "from-c"]
    assert [e.record["server"] for e in c.history()] == ["from-c", "from-a-again", "from-b", "from-a"]


def test_records_on_different_commits_merge(bed: GitBed, sources: list[Source], clock: Clock) -> None:
    first = bed.commit({"a.py": "1\n"}, "one")
    a_src, a = reconciler(bed, sources, clock, "a")
    b_src, b = reconciler(bed, sources, clock, "b")
    a_src.fetch()
    second = bed.commit({"a.py": "2\n"}, "two")
    b_src.fetch()
    assert a.record(first, [deploy("s1")]).pushed
    assert b.record(second, [deploy("s1")]).pushed
    assert [r["server"] for r in origin_note(bed, first)] == ["s1"]
    assert [r["server"] for r in origin_note(bed, second)] == ["s1"]
    assert [e.summary for e in b.history()] == ["two", "one"]


def test_refused_push_keeps_the_record_and_a_later_push_sends_it(
    bed: GitBed, sources: list[Source], clock: Clock
) -> None:
    head = bed.commit({"a.py": "a\n"}, "a")
    hook = bed.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'permission denied: this mirror is read-only' >&2\nexit 1\n")
    hook.chmod(0o755)
    src, audit = reconciler(bed, sources, clock, "a")
    src.fetch()

    result = audit.record(head, [deploy("s1")])
    assert not result.pushed
    assert "read-only" in result.reason and str(bed.origin) in result.reason
    assert audit.pending()
    assert [r["server"] for r in audit.records_for(head)] == ["s1"]
    assert not audit.push_pending().pushed  # still refused
    assert not audit.record(head, [deploy("s2")]).pushed
    assert git("--git-dir", str(bed.origin), "for-each-ref", "refs/notes") == ""

    hook.unlink()  # the remote is writable again
    result = audit.push_pending()
    assert result.pushed
    assert [r["server"] for r in origin_note(bed, head)] == ["s1", "s2"]
    assert not audit.pending()
    assert audit.push_pending() == result.__class__(True, "nothing to push", 0)


def test_unreachable_push_url_keeps_the_record_and_the_next_record_sends_all(
    bed: GitBed, sources: list[Source], clock: Clock, tmp_path: Path
) -> None:
    head = bed.commit({"a.py": "a\n"}, "a")
    src, audit = reconciler(bed, sources, clock, "a")
    src.fetch()
    clone = str(tmp_path / "a" / "repo.git")
    git("--git-dir", clone, "config", "remote.origin.pushurl", str(tmp_path / "gone.git"))
    result = audit.record(head, [deploy("s1")])
    assert not result.pushed and "gone.git" in result.reason
    git("--git-dir", clone, "config", "--unset", "remote.origin.pushurl")
    assert audit.record(head, [deploy("s2")]).pushed
    assert [r["server"] for r in origin_note(bed, head)] == ["s1", "s2"]


def test_history_newest_first_with_limit_cluster_and_origin_records(
    bed: GitBed, sources: list[Source], clock: Clock
) -> None:
    first = bed.commit({"a.py": "1\n"}, "first commit")
    a_src, a = reconciler(bed, sources, clock, "a")
    a_src.fetch()
    a.record(first, [deploy("s1", cluster="c1"), deploy("s1", cluster="c2")])
    second = bed.commit({"a.py": "2\n"}, "second commit")
    a_src.fetch()
    a.record(second, [deploy("s2", cluster="c1")])

    # another reconciler that only fetched (never wrote) sees the origin's records
    b_src, b = reconciler(bed, sources, clock, "b")
    b_src.fetch()
    for audit in (a, b):
        entries = audit.history()
        assert [(e.commit, e.record["cluster"]) for e in entries] == [
            (second, "c1"), (first, "c2"), (first, "c1")]
        assert [e.summary for e in entries] == ["second commit", "first commit", "first commit"]
        assert entries[0].at > entries[1].at == entries[2].at  # one batch, one `at`
        assert [e.commit for e in audit.history(limit=1)] == [second]
        assert [(e.commit, e.record["server"]) for e in audit.history(cluster="c1")] == [
            (second, "s2"), (first, "s1")]
        assert [r["cluster"] for r in audit.records_for(first)] == ["c1", "c2"]
    assert b.records_for(first[:10]) == a.records_for(first)


def test_record_lines_put_at_first(clock: Clock) -> None:
    now = datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert record_line({"cluster": "c1"}, now) == '{"at":"2024-01-02T03:04:05.000006Z","cluster":"c1"}'
    assert record_line({"cluster": "c1", "at": "2023-12-31T00:00:00Z"}, now).startswith(
        '{"at":"2023-12-31T00:00:00Z","cluster":"c1"')
    assert format_at(datetime(2024, 1, 1, 14, 0, tzinfo=UTC) + timedelta()) == "2024-01-01T14:00:00.000000Z"
    assert format_at(datetime(2024, 1, 1)) == "2024-01-01T00:00:00.000000Z"  # naive means UTC


def test_hand_written_note_lines_are_kept_but_not_read_as_records(
    bed: GitBed, sources: list[Source], clock: Clock
) -> None:
    head = bed.commit({"a.py": "a\n"}, "a")
    git("notes", "--ref", "zato-gitops", "add", "-m", "deployed by hand on Friday", "HEAD", cwd=bed.work)
    git("push", "--quiet", "origin", "refs/notes/zato-gitops", cwd=bed.work)
    src, audit = reconciler(bed, sources, clock, "a")
    src.fetch()
    assert audit.records_for(head) == []
    assert audit.record(head, [deploy("s1")]).pushed
    raw = git("--git-dir", str(bed.origin), "notes", "--ref", "zato-gitops", "show", head)
    assert raw.splitlines()[0] == "deployed by hand on Friday"
    assert [r["server"] for r in audit.records_for(head)] == ["s1"]
