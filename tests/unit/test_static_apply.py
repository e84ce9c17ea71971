"""Static planning and the file transaction scripts, on the real filesystem through the local transport."""

from __future__ import annotations

import hashlib
from pathlib import Path

from reconciler.apply import files
from reconciler.apply.restart import source_failures
from reconciler.core.plan import restart_for
from reconciler.core.state import DesiredCluster, LogMark, ObservedServer, ServerPaths, StaticFile, StaticTree
from reconciler.manifest.model import Cluster
from reconciler.transport.local import LocalTransport
from reconciler.zato.sources import render


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def tree(kind: str, target: str, mode: str, content: dict[str, bytes]) -> StaticTree:
    return StaticTree(kind, "repo/x", target, mode,  # type: ignore[arg-type]
                      {k: StaticFile(k, f"repo/x/{k}", sha(v), v) for k, v in content.items()})


def observed(static: dict[str, dict[str, str]], sources_text: str | None) -> ObservedServer:
    spec = Cluster.model_validate({"name": "c", "servers": [{"name": "s1", "path": "/srv/s1"}]})
    paths = ServerPaths("/srv/s1", "/srv/s1/pickup", "/srv/s1/work", "/srv/s1/work/current", "/srv/s1/logs/server.log",
                        "/srv/s1/config/repo/service-sources.txt", "0.0.0.0:17010")
    return ObservedServer("c", spec.servers[0], paths, {}, {}, LogMark(paths.log, 0, 1), True, "3.2", 1,
                          static, sources_text)


def desired(sources: tuple[StaticTree, ...], extras: tuple[StaticTree, ...], lines: tuple[str, ...]) -> DesiredCluster:
    spec = Cluster.model_validate({"name": "c", "servers": [{"name": "s1", "path": "/srv/s1"}]})
    return DesiredCluster(spec, {}, sources, extras, lines)


def test_restart_lists_added_changed_removed_and_the_sources_file() -> None:
    src = tree("source", "static/billing", "flat", {"a.py": b"a", "b.py": b"b2"})
    extra = tree("extra", "/opt/zato/extlib/acme", "tree", {"__init__.py": b"x"})
    d = desired((src,), (extra,), ("./static/billing",))
    shipped = "./work/hot-deploy/current\n"
    obs = observed({"/srv/s1/static/billing": {"b.py": sha(b"b1"), "old.py": sha(b"o")}}, shipped)
    r = restart_for(d, obs)
    assert r is not None
    got = {(c.kind, c.path, c.change) for c in r.changes}
    assert got == {
        ("source", "/srv/s1/static/billing/a.py", "added"),
        ("source", "/srv/s1/static/billing/b.py", "changed"),
        ("source", "/srv/s1/static/billing/old.py", "removed"),
        ("service-sources", "/srv/s1/config/repo/service-sources.txt", "changed"),
    }
    assert [(c.path, c.change) for c in r.shared] == [("/opt/zato/extlib/acme/__init__.py", "added")]
    assert r.sources_text == render(shipped, ("./static/billing",))


def test_nothing_to_restart_when_everything_matches() -> None:
    src = tree("source", "static/billing", "flat", {"a.py": b"a"})
    d = desired((src,), (), ("./static/billing",))
    text = render("./work/hot-deploy/current\n", ("./static/billing",))
    assert restart_for(d, observed({"/srv/s1/static/billing": {"a.py": sha(b"a")}}, text)) is None


def test_file_transaction_applies_and_rolls_back(tmp_path: Path) -> None:
    t = LocalTransport("local")
    keep = tmp_path / "srv" / "static" / "keep.py"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"old keep")
    gone = tmp_path / "srv" / "static" / "gone.py"
    gone.write_bytes(b"to remove")
    new = tmp_path / "srv" / "static" / "deep" / "new.py"
    ops = [files.FileOp(str(keep), b"new keep", sha(b"new keep")), files.FileOp(str(gone), None),
           files.FileOp(str(new), b"brand new", sha(b"brand new"))]
    tdir = files.txn_dir(str(tmp_path / "work"), "r1-s1")
    assert not files.staged(t, tdir)
    files.stage(t, tdir, ops)
    assert files.staged(t, tdir)
    files.apply(t, tdir)
    files.apply(t, tdir)  # idempotent: the backups are of the original files, not of the new ones
    assert keep.read_bytes() == b"new keep" and not gone.exists() and new.read_bytes() == b"brand new"
    files.rollback(t, tdir)
    assert keep.read_bytes() == b"old keep" and gone.read_bytes() == b"to remove" and not new.exists()


def test_a_corrupted_upload_installs_nothing(tmp_path: Path) -> None:
    t = LocalTransport("local")
    target = tmp_path / "a.py"
    tdir = files.txn_dir(str(tmp_path / "work"), "r2-s1")
    files.stage(t, tdir, [files.FileOp(str(target), b"good", sha(b"different"))])
    try:
        files.apply(t, tdir)
    except Exception as e:
        assert "do not match their sha256" in str(e)
    else:
        raise AssertionError("a bad hash must refuse the install")
    assert not target.exists()


def test_source_failures_name_only_managed_sources() -> None:
    err = "x - ERROR - 1:M - zato.server.service.store:1 - "
    lines = [
        err + "Could not load source, file_name:`/srv/s1/static/billing/a.py`, e:`E`",
        "x - INFO - 1:M - zato:1 - Could not import module `/srv/s1/acme.crm.api` (internal:0)",
        err + "Could not load source, file_name:`/srv/s1/theirs/b.py`, e:`E`",
    ]
    bad = source_failures(lines, ["/srv/s1/static/billing", "acme.crm.api"])
    assert bad == lines[:2]


def test_window_open_matches_the_current_minute_only() -> None:
    from datetime import UTC, datetime

    from reconciler.engine.chain import window_open

    assert window_open("0 2 * * *", datetime(2026, 11, 24, 2, 0, 41, tzinfo=UTC))
    assert not window_open("0 2 * * *", datetime(2026, 11, 24, 2, 1, 0, tzinfo=UTC))
    assert window_open("* 2 * * *", datetime(2026, 11, 24, 2, 59, 59, tzinfo=UTC))
    assert not window_open("* 2 * * 1", datetime(2026, 11, 24, 2, 30, tzinfo=UTC))  # a Tuesday


def test_cron_day_of_week_numbers_mean_what_crontab_means() -> None:
    from datetime import UTC, datetime

    from reconciler.engine.scheduler import cron_trigger

    monday = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    nxt = cron_trigger("0 2 * * 1").get_next_fire_time(None, monday)
    assert nxt == datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday, as crontab means 1
    sunday = cron_trigger("30 3 * * 0").get_next_fire_time(None, monday)
    assert sunday is not None and sunday.weekday() == 6
    weekdays = cron_trigger("0 2 * * 1-5").get_next_fire_time(None, datetime(2026, 11, 28, tzinfo=UTC))
    assert weekdays == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # Saturday -> Monday
    assert cron_trigger("0 2 * * 7").get_next_fire_time(None, monday).weekday() == 6  # type: ignore[union-attr]
