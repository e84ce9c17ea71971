"""The git host clients against a recording server that accepts only each provider's documented API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.errors import Stalled
from reconciler.githost.client import MARKER, HostError, client_for
from reconciler.githost.statuses import StatusPoster, StatusUpdate
from reconciler.settings import GitHost
from tests.unit.hostbed import TOKEN, HostBed

SHA = "a" * 40
PREFIX = {"github": "", "gitlab": "/api/v4", "gitea": "/api/v1"}


@pytest.fixture(params=["github", "gitlab", "gitea"])
def host(request: pytest.FixtureRequest) -> Iterator[HostBed]:
    bed = HostBed(request.param, prefix=PREFIX[request.param])
    yield bed
    bed.close()


def settings(bed: HostBed, **kw: object) -> GitHost:
    return GitHost.model_validate({"provider": bed.provider, "api_url": bed.url, "repository": "acme/zato-services",
                                   "token_env": "ZG_TEST_TOKEN", **kw})


def test_the_plan_comment_is_created_once_then_updated_in_place(host: HostBed,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZG_TEST_TOKEN", TOKEN)
    client = client_for(settings(host))
    host.comments[1] = {"id": 1, "pr": 7, "body": "LGTM"}  # someone else's comment stays untouched
    assert client.upsert_comment(7, "## plan one")[0] == "created"
    what, cid = client.upsert_comment(7, "## plan two")
    assert what == "updated"
    assert client.upsert_comment(7, "## plan two") == ("unchanged", cid)
    mine = [c for c in host.comments.values() if MARKER in c["body"]]
    assert len(mine) == 1 and mine[0]["body"] == f"{MARKER}\n## plan two" and mine[0]["id"] == cid
    assert host.comments[1]["body"] == "LGTM"
    methods = [r.method for r in host.requests]
    assert methods == ["GET", "POST", "GET", "PATCH" if host.provider != "gitlab" else "PUT", "GET"]
    assert all(r.headers.get("user-agent") == "zato-gitops" for r in host.requests)


def test_comments_are_found_on_a_later_page(host: HostBed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZG_TEST_TOKEN", TOKEN)
    client = client_for(settings(host))
    client.per_page = 2
    for i in range(1, 6):
        host.comments[i] = {"id": i, "pr": 3, "body": f"chatter {i}"}
    host.comments[6] = {"id": 6, "pr": 3, "body": f"{MARKER}\nold plan"}
    assert client.upsert_comment(3, "new plan") == ("updated", 6)


def test_statuses_follow_each_providers_vocabulary(host: HostBed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZG_TEST_TOKEN", TOKEN)
    client = client_for(settings(host))
    client.set_status(SHA, "pending", "zato-gitops/prod", "deploying", "https://gitops.example.com")
    client.set_status(SHA, "failure", "zato-gitops/prod", "x" * 300)
    key = "name" if host.provider == "gitlab" else "context"
    failed = "failed" if host.provider == "gitlab" else "failure"
    assert [(s["state"], s[key]) for s in host.statuses] == [("pending", "zato-gitops/prod"),
                                                            (failed, "zato-gitops/prod")]
    assert host.statuses[0]["target_url"] == "https://gitops.example.com"
    assert "target_url" not in host.statuses[1] and len(host.statuses[1]["description"]) == 140


def test_a_status_that_cannot_be_posted_is_retried_then_given_up_without_raising(
        host: HostBed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZG_TEST_TOKEN", TOKEN)
    results: list[tuple[str, str]] = []
    poster = StatusPoster(client_for(settings(host)), retries=2, retry_delay=0.0,
                          on_result=lambda r, u: results.append((r, u.state)))
    host.fail_statuses = 2
    poster.post(StatusUpdate(SHA, "prod", "pending", "deploying"))
    poster.post(StatusUpdate(SHA, "prod", "success", "every server runs it"))
    assert poster.flush(10)
    assert results == [("retried", "pending"), ("retried", "pending"), ("posted", "pending"), ("posted", "success")]
    assert [s["state"] for s in host.statuses] == ["pending", "success"]  # in order, despite the retries
    host.fail_statuses = 10
    poster.post(StatusUpdate(SHA, "prod", "failure", "boom"))
    assert poster.flush(10)
    assert results[-1] == ("failed", "failure")
    poster.close()


def test_the_token_comes_from_the_environment_and_is_never_in_a_message(host: HostBed,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZG_TEST_TOKEN", raising=False)
    with pytest.raises(Stalled, match="ZG_TEST_TOKEN is empty"):
        client_for(settings(host))
    monkeypatch.setenv("ZG_TEST_TOKEN", "wrong-token")
    with pytest.raises(HostError) as e:
        client_for(settings(host)).upsert_comment(1, "x")
    assert e.value.status == 401 and "wrong-token" not in e.value.message
