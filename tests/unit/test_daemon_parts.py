"""The daemon's pure parts and its decisions, with time injected and the engine faked at its seam.

Conditions and transitions (events only on transitions), backoff, the webhook signature checks of each git host,
notification bodies, log redaction, and the poll and drift decisions of `Daemon` driven by a fake engine and a
fake clock: nothing here sleeps, opens SSH or runs git.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from reconciler.apply.hotdeploy import ServerResult
from reconciler.daemon.conditions import ClusterStatus, Event, StatusStore, backoff
from reconciler.daemon.drift import drift_items
from reconciler.daemon.http import Server, is_watched, push_ref, verify_signature
from reconciler.daemon.logsetup import setup
from reconciler.daemon.loop import Daemon
from reconciler.daemon.notify import Notifier, body, safe_url
from reconciler.engine.results import ApplyReport, PlanReport, error_outcome
from reconciler.errors import Busy, HostKeyError, ModulesInvalid, Stalled, Transient, Unreachable
from reconciler.gitrepo.records import Record
from reconciler.settings import Settings

A, B, C = "a" * 40, "b" * 40, "c" * 40


def conds(cs: ClusterStatus) -> dict[str, tuple[str, str]]:
    return {t: (c.status, c.reason) for t, c in cs.conditions.items()}


# --- status: backoff, conditions, transitions ------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 10, 600) for n in range(1, 9)] == [10, 20, 40, 80, 160, 320, 600, 600]
    assert backoff(0, 10, 600) == 0
    assert backoff(10_000, 1, 5) == 5


def test_a_transient_failure_is_retried_with_backoff_and_is_one_event() -> None:
    cs = ClusterStatus("prod")
    assert cs.due(A, 0) == (True, f"new revision {A[:12]}")
    cs.begin(A, 0)
    assert conds(cs)["Reconciling"] == ("True", "Progressing")
    assert [e.kind for e in cs.succeed(A, 1, "1 module deployed")] == ["deployed"]
    assert conds(cs) == {"Ready": ("True", "ReconciliationSucceeded"), "Reconciling": ("False", "Succeeded"),
                         "Stalled": ("False", "Succeeded")}
    assert cs.due(A, 2) == (False, "up to date")

    events = cs.fail(B, "transient", "ServersUnreachable", "server2: timeout", 100, retry_base=10, retry_max=600)
    assert [e.kind for e in events] == ["failed"]
    assert conds(cs)["Ready"] == ("False", "ServersUnreachable")
    assert conds(cs)["Reconciling"] == ("True", "ProgressingWithRetry")
    assert conds(cs)["Stalled"][0] == "False"
    assert cs.due(B, 105)[0] is False
    assert cs.due(B, 110)[0] is True
    # the same failure again: no event, next wait doubled
    assert cs.fail(B, "transient", "ServersUnreachable", "server2: timeout", 110, retry_base=10, retry_max=600) == []
    assert cs.failure is not None and cs.failure.attempts == 2 and cs.failure.next_retry_at == 130
    assert cs.due(B, 125)[0] is False
    # a newer commit does not wait for the retry: newest commit wins
    assert cs.due(C, 111)[0] is True
    events = cs.succeed(C, 140, "1 module deployed")
    assert [e.kind for e in events] == ["recovered"] and cs.failure is None
    assert cs.last_applied_revision == C


def test_a_stalled_commit_waits_for_a_new_one_unless_forced() -> None:
    cs = ClusterStatus("prod")
    cs.succeed(A, 0)
    ready_since = cs.conditions["Ready"].last_transition_time
    cs.fail(B, "stalled", "ModulesInvalid", "x.py:3: SyntaxError", 10, retry_base=10, retry_max=600)
    assert conds(cs)["Stalled"] == ("True", "ModulesInvalid")
    assert conds(cs)["Reconciling"][0] == "False"
    assert cs.conditions["Ready"].last_transition_time != ready_since
    assert cs.due(B, 10_000) == (False, f"commit {B[:12]} failed (ModulesInvalid); waiting for a new commit")
    assert cs.due(B, 10_000, forced=True)[0] is True
    assert cs.due(C, 11)[0] is True
    assert cs.retry_at() is None
    # the same stalled commit reported again (e.g. after `reconcile`): no second event
    assert cs.fail(B, "stalled", "ModulesInvalid", "x.py:3: SyntaxError", 20, retry_base=10, retry_max=600) == []
    # a stalled commit, then a transient one: a new event each
    assert len(cs.fail(C, "transient", "ConfirmTimeout", "server3 timeout", 30, retry_base=1, retry_max=4)) == 1


def test_conditions_keep_their_transition_time_while_nothing_changes() -> None:
    cs = ClusterStatus("prod")
    cs.succeed(A, 100)
    t = cs.conditions["Ready"].last_transition_time
    cs.begin(A, 200)
    cs.succeed(A, 300)
    assert cs.conditions["Ready"].last_transition_time == t


def test_suspended_clusters_are_never_due() -> None:
    cs = ClusterStatus("prod")
    cs.set_suspended(True, 0)
    assert cs.due(A, 0) == (False, "suspended")
    assert cs.due(A, 0, forced=True) == (False, "suspended")
    cs.fail(A, "transient", "X", "y", 0, retry_base=1, retry_max=1)
    assert cs.retry_at() is None


def test_drift_is_an_event_once_per_distinct_drift() -> None:
    cs = ClusterStatus("prod")
    cs.succeed(A, 0)
    assert [e.kind for e in cs.found_drift(A, ["server2: crm.py modified"], "reported", 1)] == ["drift"]
    assert conds(cs)["Ready"] == ("False", "DriftDetected")
    assert cs.found_drift(A, ["server2: crm.py modified"], "reported", 2) == []
    assert len(cs.found_drift(A, ["server2: crm.py modified", "server1: x.py missing"], "reported", 3)) == 1
    cs.no_drift(4)
    assert conds(cs)["Ready"] == ("True", "ReconciliationSucceeded")
    assert len(cs.found_drift(A, ["server2: crm.py modified"], "healed", 5)) == 1
    assert conds(cs)["Ready"][0] == "True"  # healed drift leaves the cluster Ready


def test_status_round_trips_through_the_file(tmp_path: Path) -> None:
    store = StatusStore(tmp_path)
    cs = store.cluster("prod")
    cs.succeed(A, 1)
    cs.fail(B, "transient", "ServersUnreachable", "down", 2, retry_base=10, retry_max=60)
    cs.found_drift(A, ["server1: a.py missing"], "reported", 3)
    cs.set_suspended(True, 4)
    cs.begin(B, 5)
    store.source.revision = B
    store.save()
    loaded = StatusStore(tmp_path).load()
    again = loaded.clusters["prod"]
    assert again.failure == cs.failure and again.drift == cs.drift and again.suspended
    assert again.last_applied_revision == A and loaded.source.revision == B
    assert again.reconciling is False  # what was in progress ended with the process
    (tmp_path / "status.json").write_text("{not json")
    assert StatusStore(tmp_path).load().clusters == {}


# --- webhooks ----------------------------------------------------------------------------------------------------

SECRET = "It's a Secret to Everybody"
PAYLOAD = b'{"ref":"refs/heads/main"}'


def test_signatures_of_each_git_host() -> None:
    # GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!"
    github = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert verify_signature("github", {"x-hub-signature-256": f"sha256={github}"}, b"Hello, World!", SECRET)
    assert not verify_signature("github", {"x-hub-signature-256": f"sha256={github}"}, b"Hello, World?", SECRET)
    assert not verify_signature("github", {"x-hub-signature-256": github}, b"Hello, World!", SECRET)
    assert not verify_signature("github", {}, b"Hello, World!", SECRET)
    assert not verify_signature("github", {"x-hub-signature-256": f"sha256={github}"}, b"Hello, World!", "")
    assert verify_signature("gitea", {"x-gitea-signature": github}, b"Hello, World!", SECRET)
    assert verify_signature("gitea", {"x-hub-signature-256": f"sha256={github}"}, b"Hello, World!", SECRET)
    assert not verify_signature("gitea", {"x-gitea-signature": "00" * 32}, b"Hello, World!", SECRET)
    assert verify_signature("generic", {"x-signature-256": f"sha256={github.upper()}"}, b"Hello, World!", SECRET)
    assert verify_signature("gitlab", {"x-gitlab-token": SECRET}, b"anything", SECRET)
    assert not verify_signature("gitlab", {"x-gitlab-token": SECRET + "x"}, b"anything", SECRET)
    assert not verify_signature("bitbucket", {"x-hub-signature-256": f"sha256={github}"}, b"Hello, World!", SECRET)


def test_what_a_delivery_means() -> None:
    assert push_ref("github", {"x-github-event": "push"}, {"ref": "refs/heads/main"}) == ("push", "refs/heads/main")
    assert push_ref("github", {"x-github-event": "ping"}, {"zen": "x"}) == ("ping", None)
    assert push_ref("github", {"x-github-event": "issues"}, {})[0] == "ignore"
    assert push_ref("gitlab", {"x-gitlab-event": "Push Hook"}, {"ref": "refs/heads/dev"}) == ("push", "refs/heads/dev")
    assert push_ref("gitlab", {"x-gitlab-event": "Merge Request Hook"}, {"object_kind": "merge_request"})[0] == "ignore"
    assert push_ref("gitea", {"x-gitea-event": "push"}, {"ref": "refs/heads/main"})[0] == "push"
    assert push_ref("generic", {}, {"branch": "main"}) == ("push", "refs/heads/main")
    assert push_ref("generic", {}, None) == ("push", None)
    assert is_watched("refs/heads/main", "main") and is_watched(None, "main")
    assert not is_watched("refs/heads/main-2", "main") and not is_watched("refs/tags/main", "main")


class FakeApp:
    branch = "main"
    webhook_secret: str | None = SECRET
    api_token = "tok"

    def __init__(self) -> None:
        self.requests: list[tuple[list[str] | None, bool]] = []
        self.counted: list[tuple[str, str]] = []

    def status_dict(self) -> dict[str, Any]:
        return {"clusters": []}

    def readiness(self) -> tuple[bool, str]:
        return False, "the first poll has not finished yet"

    def metrics_text(self) -> tuple[bytes, str]:
        return b"# nothing\n", "text/plain"

    def request_reconcile(self, clusters: list[str] | None, why: str, *, force: bool) -> None:
        self.requests.append((clusters, force))

    def set_suspended(self, cluster: str, suspended: bool) -> None:
        if cluster != "prod":
            raise KeyError(cluster)

    def count_webhook(self, provider: str, result: str) -> None:
        self.counted.append((provider, result))


def _post(url: str, data: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_the_http_endpoint_refuses_what_it_must() -> None:
    import hashlib
    import hmac

    app = FakeApp()
    server = Server(("127.0.0.1", 0), app)
    server.start()
    try:
        url = server.url
        sig = "sha256=" + hmac.new(SECRET.encode(), PAYLOAD, hashlib.sha256).hexdigest()
        gh = {"X-GitHub-Event": "push"}
        assert _post(url + "/hooks/github", PAYLOAD, gh | {"X-Hub-Signature-256": "sha256=00"}) == 401
        assert _post(url + "/hooks/github", PAYLOAD, gh) == 401
        assert app.requests == []
        assert _post(url + "/hooks/github", b"x" * (1024 * 1024 + 1), gh | {"X-Hub-Signature-256": sig}) == 413
        assert _post(url + "/hooks/github", PAYLOAD, gh | {"X-Hub-Signature-256": sig}) == 202
        assert app.requests == [(None, False)]
        assert _post(url + "/hooks/svn", PAYLOAD, {}) == 404
        assert _post(url + "/api/reconcile", b"{}", {}) == 401
        assert _post(url + "/api/reconcile", b'{"clusters":["prod"]}', {"Authorization": "Bearer tok"}) == 202
        assert app.requests[-1] == (["prod"], True)
        assert _post(url + "/api/suspend", b'{"clusters":["nope"]}', {"Authorization": "Bearer tok"}) == 404
        assert _post(url + "/api/suspend", b'{"clusters":["prod"]}', {"Authorization": "Bearer tokx"}) == 401
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/readyz", timeout=5)
        assert e.value.code == 503
        app.webhook_secret = None
        assert _post(url + "/hooks/github", PAYLOAD, gh | {"X-Hub-Signature-256": sig}) == 403
        assert ("github", "unauthorized") in app.counted and ("github", "too-large") in app.counted
    finally:
        server.stop()


# --- notifications and logs --------------------------------------------------------------------------------------


def test_notification_bodies_and_failures() -> None:
    ev = Event("failed", "prod", B, "prod: revision bbbb failed", 0)
    assert json.loads(body(ev, "json"))["event"] == "failed"
    assert json.loads(body(ev, "slack")) == {"text": ":x: zato-gitops failed: prod: revision bbbb failed"}
    assert safe_url("https://hooks.slack.com/services/T0/B0/XXXX") == "https://hooks.slack.com/services/..."
    sent: list[tuple[str, bytes]] = []
    results: list[bool] = []

    def post(url: str, data: bytes, timeout: float) -> int:
        sent.append((url, data))
        if "down" in url:
            raise OSError("connection refused")
        return 200

    n = Notifier(["http://ok/x", "http://down/y"], "json", post=post, on_result=results.append)
    for f in n.send([ev]):
        f.result(timeout=5)  # a failed delivery never raises
    n.close()
    assert len(sent) == 2 and sorted(results) == [False, True]
    assert Notifier([], post=post).send([ev]) == []


def test_logs_are_one_line_and_never_carry_a_secret() -> None:
    stream = io.StringIO()
    handler = setup("json", secrets=["hunter2"], stream=stream)
    try:
        logging.getLogger("zato_gitops.t").warning("cannot fetch https://user:tok@git.example/x with hunter2",
                                                    extra={"cluster": "prod"})
        text = stream.getvalue()
        rec = json.loads(text)
        assert "tok@" not in text and "hunter2" not in text and rec["cluster"] == "prod"
        setup("text", stream=stream)
        stream.truncate(0)
        stream.seek(0)
        logging.getLogger("zato_gitops.t").error("refused:\n  a.py:1: SyntaxError\n  b.py:2: SyntaxError")
        assert stream.getvalue().count("\n") == 1 and "a.py:1: SyntaxError | b.py:2" in stream.getvalue()
    finally:
        logging.getLogger().removeHandler(handler)


# --- the daemon's decisions, with a fake engine and a fake clock ----------------------------------------------


def _result(modules: dict[str, str], error: str = "") -> ServerResult:
    return ServerResult("server1", modules=modules, error=error)  # type: ignore[arg-type]


def _report(cluster: str = "prod", *, results: dict[str, ServerResult] | None = None,
            unreachable: list[Any] | None = None, refused: list[str] | None = None,
            plan_empty: bool = True) -> ApplyReport:
    observed = {cluster: SimpleNamespace(servers=[SimpleNamespace(name=f"server{i}", running=True)
                                                  for i in (1, 2, 3)])}
    hot = () if plan_empty else (SimpleNamespace(module="crm.py", diffs=[SimpleNamespace(server="server2",
                                                                                        reason="changed")]),)
    cp = SimpleNamespace(cluster=cluster, empty=plan_empty, hot_deploys=hot, restarts=())
    plan_report = PlanReport(cluster, None, observed, SimpleNamespace(cluster=lambda n: cp),  # type: ignore[arg-type]
                             unreachable or [])
    res = results or {}
    return ApplyReport(plan_report, results={cluster: res} if res else {},
                       refused={cluster: refused} if refused else {}, run_id="r1")


class FakeEngine:
    """The engine's seam as the daemon uses it: remote head, fetch, desired, apply, plan, audit."""

    def __init__(self, clusters: tuple[str, ...] = ("prod",), drift: str = "heal") -> None:
        self.head = A
        self.clusters = clusters
        self.drift = drift
        self.applied: list[tuple[str, str]] = []
        self.outcomes: dict[str, Any] = {}  # commit -> report, or exception to raise
        self.drifted = False
        self.records: list[Record] = []
        self.fetches = 0
        self.recovered = 0
        self.desired_built: list[str] = []
        self.given_desired: list[bool] = []
        self.by = "test"
        self.source = SimpleNamespace(remote_head=lambda: self.head, safe_url="file:///origin")
        self.audit = SimpleNamespace(record=lambda commit, recs: self.records.extend(recs),
                                     records_for=lambda commit: [])

    def fetch(self) -> str:
        self.fetches += 1
        return self.head

    def desired(self, commit: str) -> Any:
        self.desired_built.append(commit)
        out = self.outcomes.get(commit)
        if isinstance(out, ModulesInvalid):
            raise out
        spec = SimpleNamespace(drift=self.drift)
        return SimpleNamespace(manifest=SimpleNamespace(clusters=[SimpleNamespace(name=c, servers=[1, 2, 3])
                                                                  for c in self.clusters]),
                               cluster=lambda n: SimpleNamespace(spec=spec))

    def recover(self) -> None:
        self.recovered += 1

    def close(self) -> None:
        pass

    def due_rollouts(self) -> list[Any]:
        return []

    def apply(self, only: list[str], commit: str, desired: Any = None) -> Any:
        [cluster] = only
        self.given_desired.append(desired is not None)
        self.applied.append((cluster, commit))
        out = self.outcomes.get((cluster, commit), self.outcomes.get(commit))
        if isinstance(out, Exception):
            raise out
        if out is not None:
            return out
        self.drifted = False
        return _report(cluster, results={"server1": _result({"crm.py": "confirmed"})})

    def plan(self, only: list[str], commit: str | None = None, desired: Any = None) -> Any:
        r = _report(only[0], plan_empty=not self.drifted)
        r.report.desired = desired or self.desired(commit or self.head)
        return r.report


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_daemon(tmp_path: Path, engine: FakeEngine, **settings: Any) -> tuple[Daemon, FakeClock, list[Event]]:
    clock = FakeClock()
    events: list[Event] = []
    notifier = SimpleNamespace(send=lambda evs: events.extend(evs), close=lambda wait=True: None)
    d = Daemon(Settings(repo="x", state_dir=tmp_path, retry_backoff=10, retry_backoff_max=40, **settings),
               clock=clock, notifier=notifier)  # type: ignore[arg-type]
    d.engine = engine
    return d, clock, events


def test_poll_applies_a_new_head_once_and_not_again(tmp_path: Path) -> None:
    eng = FakeEngine(clusters=("prod", "test"))
    d, _clock, events = make_daemon(tmp_path, eng)
    d.poll()
    assert eng.recovered == 1  # every poll first finishes killed runs' records and pushes notes kept locally
    assert eng.desired_built == [A] and eng.given_desired == [True, True]  # built once, passed to both applies
    assert eng.applied == [("prod", A), ("test", A)]
    assert [e.kind for e in events] == ["deployed", "deployed"]
    d.poll()
    d.poll()
    assert eng.applied == [("prod", A), ("test", A)] and eng.fetches == 1  # an unmoved head costs one ls-remote
    saved = json.loads((tmp_path / "status.json").read_text())
    assert [c["last_applied_revision"] for c in saved["clusters"]] == [A, A]


def test_one_failing_cluster_never_blocks_another_and_transient_ones_back_off(tmp_path: Path) -> None:
    eng = FakeEngine(clusters=("prod", "test"))
    eng.outcomes[("prod", A)] = Unreachable("server2: connection refused")
    d, clock, events = make_daemon(tmp_path, eng)
    d.poll()
    assert eng.applied == [("prod", A), ("test", A)]
    assert d.status.clusters["test"].ready() and not d.status.clusters["prod"].ready()
    assert d.status.clusters["prod"].failure.reason == "Unreachable"  # type: ignore[union-attr]
    clock.now += 5
    d.poll()
    assert len(eng.applied) == 2  # before the backoff: not retried
    clock.now += 6
    d.poll()
    assert eng.applied[-1] == ("prod", A) and len(eng.applied) == 3
    assert [e.kind for e in events].count("failed") == 1  # the same failure again is not an event
    del eng.outcomes[("prod", A)]
    clock.now += 21
    d.poll()
    assert d.status.clusters["prod"].ready()
    assert [e.kind for e in events][-1] == "recovered"


def test_a_stalled_commit_is_not_retried_and_the_next_one_supersedes_it(tmp_path: Path) -> None:
    eng = FakeEngine()
    d, clock, _events = make_daemon(tmp_path, eng)
    d.poll()
    eng.head = B
    eng.outcomes[B] = _report(results={"server1": _result({"crm.py": "failed"})})
    d.poll()
    assert d.status.clusters["prod"].failure.kind == "stalled"  # type: ignore[union-attr]
    assert d.status.clusters["prod"].failure.reason == "DeployFailed"  # type: ignore[union-attr]
    for _ in range(5):
        clock.now += 1000
        d.poll()
    assert eng.applied.count(("prod", B)) == 1
    d.request_reconcile(["prod"], "a person asked", force=True)
    d.poll()
    assert eng.applied.count(("prod", B)) == 2  # a person may ask again
    eng.head = C
    d.poll()
    assert eng.applied[-1] == ("prod", C) and d.status.clusters["prod"].last_applied_revision == C


def test_an_invalid_commit_is_recorded_once_and_stalls_every_cluster(tmp_path: Path) -> None:
    eng = FakeEngine(clusters=("prod", "test"))
    d, clock, events = make_daemon(tmp_path, eng)
    d.poll()
    eng.head = B
    eng.outcomes[B] = ModulesInvalid(["services/x.py:3: SyntaxError: invalid syntax"])
    d.poll()
    d.poll()
    clock.now += 1000
    d.poll()
    assert len(eng.records) == 1 and eng.records[0].action == "refused"
    assert all(c.conditions["Stalled"].status == "True" for c in d.status.clusters.values())
    assert [e.kind for e in events] == ["deployed", "deployed", "failed", "failed"]
    assert len(eng.applied) == 2


def test_suspended_clusters_are_left_alone_and_resume_reconciles(tmp_path: Path) -> None:
    eng = FakeEngine(clusters=("prod", "test"))
    d, _clock, _events = make_daemon(tmp_path, eng)
    d.poll()
    d.set_suspended("prod", True)
    eng.head = B
    d.poll()
    assert ("prod", B) not in eng.applied and ("test", B) in eng.applied
    d.set_suspended("prod", False)  # no scheduler here: the request waits for the next poll
    d.poll()
    assert eng.applied[-1] == ("prod", B)
    with pytest.raises(KeyError):
        d.set_suspended("nope", True)


def test_drift_is_healed_or_only_reported(tmp_path: Path) -> None:
    eng = FakeEngine()
    d, _clock, events = make_daemon(tmp_path, eng)
    d.poll()
    eng.drifted = True
    d.drift_check()
    assert eng.applied[-1] == ("prod", A) and not eng.drifted
    assert d.status.clusters["prod"].drift.action == "healed"  # type: ignore[union-attr]
    assert [r.action for r in eng.records] == ["drift"]
    d.drift_check()
    assert d.status.clusters["prod"].drift is None

    eng.drift = "report"
    eng.drifted = True
    n = len(eng.applied)
    d.drift_check()
    d.drift_check()
    assert len(eng.applied) == n
    assert d.status.clusters["prod"].conditions["Ready"].reason == "DriftDetected"
    assert [e.kind for e in events].count("drift") == 2  # healed once, reported once (not twice)


def test_classify_sorts_outcomes_by_what_to_do() -> None:
    ok = _report(results={"s1": _result({"a.py": "confirmed", "b.py": "confirmed"})}).cluster("prod")
    assert ok.ok and ok.detail == "2 modules hot-deployed"
    assert _report().cluster("prod").detail == "no server change"
    t = _report(results={"s1": _result({"a.py": "timeout"})}).cluster("prod")
    assert (t.kind, t.reason) == ("transient", "ConfirmTimeout")
    h = _report(unreachable=[("prod", "s2", HostKeyError("unknown host key"))]).cluster("prod")
    assert (h.kind, h.reason) == ("stalled", "HostKeyError")
    u = _report(unreachable=[("prod", "s2", Unreachable("refused"))]).cluster("prod")
    assert (u.kind, u.reason) == ("transient", "ServersUnreachable")
    r = _report(refused=["server3 is not running"]).cluster("prod")
    assert (r.kind, r.reason) == ("transient", "ServersNotReady")
    assert error_outcome(Busy("another zato-gitops (pid 1) is working on the state dir /x")).kind == "transient"
    from reconciler.apply.lease import Holder, LeaseHeld

    leased = error_outcome(LeaseHeld("prod", Holder("t", 2_000_000_000, 1_999_999_000, "ops@h", 9, "/s"), "s1"))
    assert (leased.kind, leased.reason) == ("transient", "ClusterLeased")
    assert leased.message.startswith("cluster prod is being reconciled by ops@h (pid 9) since 2033-05-18T")
    assert error_outcome(ModulesInvalid(["x"])).reason == "ModulesInvalid"
    assert error_outcome(RuntimeError("boom")).reason == "InternalError"
    cp = SimpleNamespace(empty=False, restarts=[], hot_deploys=[SimpleNamespace(module="a.py", diffs=[
        SimpleNamespace(server="s1", reason="added"), SimpleNamespace(server="s2", reason="changed")])])
    assert drift_items(cp) == ["s1: a.py missing", "s2: a.py modified"]
    from reconciler.core.plan import FileChange, Restart

    static = SimpleNamespace(empty=False, hot_deploys=[], restarts=[Restart("s1", "h:22", (
        FileChange("source", "/srv/s1/static/a.py", "changed", "x", "y"),
        FileChange("service-sources", "/srv/s1/config/repo/service-sources.txt", "changed", "x", "y"),
    ), (FileChange("extra", "/opt/zato/extlib/acme/__init__.py", "removed", "x", None),))])
    assert drift_items(static) == [
        "s1: /srv/s1/static/a.py modified",
        "s1: service-sources.txt block changed",
        "s1: /opt/zato/extlib/acme/__init__.py not in the commit",
    ]


def test_one_daemon_per_state_dir(tmp_path: Path) -> None:
    from reconciler.daemon.client import DaemonLock, running_daemon

    first = DaemonLock(tmp_path)
    first.acquire()
    try:
        assert DaemonLock(tmp_path).is_held()
        with pytest.raises(Stalled, match="already running on the state dir"):
            DaemonLock(tmp_path).acquire()
    finally:
        first.release()
    assert running_daemon(tmp_path) is None


def test_the_daemon_runs_and_stops_on_request(tmp_path: Path) -> None:
    """The whole lifecycle in-process: lock, endpoint, scheduler, first poll, stop, status written, lock freed."""
    eng = FakeEngine()
    d = Daemon(Settings(repo="x", state_dir=tmp_path, listen="127.0.0.1:0", interval=60),
               engine_factory=lambda stop: eng)
    t = threading.Thread(target=d.run, kwargs={"install_signals": False})
    t.start()
    try:
        for _ in range(200):
            if d.status.clusters.get("prod") and d.status.clusters["prod"].ready():
                break
            threading.Event().wait(0.02)
        assert d.readiness()[0]
        assert json.loads((tmp_path / "daemon.json").read_text())["token"] == d.api_token
    finally:
        d.stop.set()
        t.join(30)
    assert not t.is_alive()
    assert not (tmp_path / "daemon.json").exists()
    assert json.loads((tmp_path / "status.json").read_text())["clusters"][0]["last_applied_revision"] == A


def test_a_rollout_waiting_for_its_window_is_neither_failed_nor_healed(tmp_path: Path) -> None:
    eng = FakeEngine()
    d, clock, events = make_daemon(tmp_path, eng)
    d.poll()
    eng.head = B
    waiting = _report()
    waiting.scheduled = {"prod": ("r1", "2030-01-01T02:00:00+00:00")}
    eng.outcomes[B] = waiting
    d.poll()
    cs = d.status.clusters["prod"]
    assert cs.conditions["Reconciling"].reason == "WaitingForWindow" and cs.failure is not None
    assert [e.kind for e in events] == ["deployed"]  # waiting is not a failure
    eng.drifted = True
    d.drift_check()
    assert eng.applied.count(("prod", A)) == 1  # not healed back to A while B waits for its window
    clock.now = 1893463200 + 31
    del eng.outcomes[B]
    d.poll()
    assert cs.last_applied_revision == B and [e.kind for e in events] == ["deployed", "deployed"]


class Standby:
    """The election seam, as a daemon that does not lead sees it: requests go to the leader."""

    role = "standby"
    reason = "another daemon leads"
    shared = True
    is_leader = False

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = ""

    def forward(self, request: dict[str, Any]) -> str:
        if not self.fail:
            self.sent.append(request)
        return self.fail


def test_a_standby_reconciles_nothing_forwards_requests_and_writes_no_status(tmp_path: Path) -> None:
    eng = FakeEngine()
    d, _clock, _events = make_daemon(tmp_path, eng)
    d.leader = Standby()  # type: ignore[assignment]
    d.poll()
    d.drift_check()
    d.request_reconcile(None, "github webhook", force=False)
    d.request_reconcile(["prod"], "asked through the API", force=True)
    assert eng.applied == [] and eng.fetches == 0 and not (tmp_path / "status.json").exists()
    assert [(r["action"], r["clusters"], r["force"]) for r in d.leader.sent] == [
        ("reconcile", None, False), ("reconcile", ["prod"], True)]
    assert d.status_dict()["daemon"]["role"] == "standby"
    d.status.cluster("prod")
    d.set_suspended("prod", True)
    assert d.leader.sent[-1] == {"action": "suspend", "clusters": ["prod"], "suspended": True}
    d.leader.fail = "connection refused"
    with pytest.raises(Transient, match="cannot reach the leader"):
        d.set_suspended("prod", False)
    d.leader.sent.pop()

    # what the leader does with a forwarded request: as if it had come to it
    leader, _, _ = make_daemon(tmp_path / "leader", eng)
    leader._on_request(d.leader.sent[1])
    leader.poll()
    assert eng.applied == [("prod", A)]
    assert leader.status_dict()["daemon"]["role"] == "leader"


def test_an_untrusted_head_stalls_every_cluster_is_recorded_once_and_never_applied(tmp_path: Path) -> None:
    from reconciler.gitrepo.trust import Untrusted

    eng = FakeEngine(clusters=("prod", "test"))
    d, clock, events = make_daemon(tmp_path, eng)
    d.poll()
    eng.head = B

    def untrusted() -> str:
        eng.fetches += 1
        raise Untrusted(B, f"commit {B[:12]} is unsigned; only commits signed by an allowed key are applied")

    eng.fetch = untrusted  # type: ignore[method-assign]
    d.poll()
    clock.now += 1000
    d.poll()
    assert [r.action for r in eng.records] == ["refused"] and eng.records[0].commit == B
    assert all(c.conditions["Stalled"].status == "True" and "unsigned" in c.conditions["Stalled"].message
               for c in d.status.clusters.values())
    assert [e.kind for e in events] == ["deployed", "deployed", "failed", "failed"]
    assert eng.applied == [("prod", A), ("test", A)]
