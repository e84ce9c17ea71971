"""One small client per git host, each following that provider's documented REST API.

Why not a library per provider (PyGithub, python-gitlab, ...): we need four calls (list, create and edit a comment,
post a commit status) on three providers; three SDKs would be three large dependencies for them. The calls are:

- list comments: GitHub and Gitea `GET /repos/{o}/{r}/issues/{n}/comments` (GitHub paged with `per_page` and
  `page`; Gitea not paged: every comment in one answer), GitLab
  `GET /projects/{id}/merge_requests/{iid}/notes` (the project id or URL-encoded path);
- create one: `POST` to the same path with `{"body": ...}`;
- edit ours: GitHub and Gitea `PATCH /repos/{o}/{r}/issues/comments/{id}`, GitLab `PUT .../notes/{note_id}`;
- commit status: GitHub and Gitea `POST /repos/{o}/{r}/statuses/{sha}` with `{state, target_url, description,
  context}`, GitLab `POST /projects/{id}/statuses/{sha}` with `{state, name, target_url, description}`;
- token: GitHub `Authorization: Bearer T`, GitLab `PRIVATE-TOKEN: T`, Gitea `Authorization: token T`.

States: GitHub and Gitea take pending/success/failure; GitLab calls a failure `failed`.

The comment the reconciler owns carries a hidden marker (an HTML comment, invisible on every provider); the
client finds it among the PR's comments and edits it instead of adding another, as Atlantis does.

The token is read from the environment variable the config names and is never logged or put in a message: errors
name the method and path only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.errors import Stalled, Transient
from reconciler.settings import GitHost

MARKER = "<!-- zato-gitops:plan -->"

State = Literal["pending", "success", "failure"]

USER_AGENT = "zato-gitops"
#: a provider caps a status description (GitHub: 140 characters)
DESCRIPTION_MAX = 140


class HostError(Transient):
    """The git host refused or could not be reached; `status` is the HTTP status (0 when there was none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Comment:
    id: int
    body: str


class Client:
    """The calls every provider answers; subclasses say how."""

    provider = ""
    #: how many comments one page asks for
    per_page = 100

    def __init__(self, host: GitHost, token: str | None = None) -> None:
        self.host = host
        self.base = host.api_url.rstrip("/")
        tok = token if token is not None else host.token()
        if not tok:
            raise Stalled(f"no token for {host.provider}: the environment variable {host.token_env} is empty",
                          hint=f"export {host.token_env} with an API token that may comment and set statuses")
        self._token = tok

    # -- what each provider defines ---------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def comments_path(self, pr: int) -> str:
        raise NotImplementedError

    def comment_path(self, pr: int, comment_id: int) -> str:
        raise NotImplementedError

    edit_method = "PATCH"

    def status_request(self, sha: str, state: State, context: str, description: str,
                       target_url: str | None) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    # -- the calls --------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **self.auth_headers()}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.host.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace").strip()
            raise HostError(f"{self.provider}: {method} {path} answered {e.code} {e.reason}: {detail}", e.code) from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise HostError(f"{self.provider}: {method} {path}: cannot reach {self.base}: {reason}") from e
        return json.loads(raw) if raw.strip() else None

    #: whether the comments list is paged (`per_page`, `page`); Gitea's issue comments list is not: one call
    paged = True

    def comments(self, pr: int) -> list[Comment]:
        found: dict[int, Comment] = {}
        page = 1
        while True:
            query = f"?{urllib.parse.urlencode({'per_page': self.per_page, 'page': page})}" if self.paged else ""
            batch = self.request("GET", f"{self.comments_path(pr)}{query}") or []
            new = [Comment(int(c["id"]), str(c.get("body") or "")) for c in batch if int(c["id"]) not in found]
            found.update((c.id, c) for c in new)
            if not self.paged or len(batch) < self.per_page or not new:  # `not new`: a host that ignores paging
                return list(found.values())
            page += 1

    def upsert_comment(self, pr: int, body: str) -> tuple[Literal["created", "updated", "unchanged"], int]:
        """Post `body` (which carries MARKER) on the PR, or edit our earlier comment; returns what happened."""
        if MARKER not in body:
            body = f"{MARKER}\n{body}"
        mine = next((c for c in self.comments(pr) if MARKER in c.body), None)
        if mine is None:
            made = self.request("POST", self.comments_path(pr), {"body": body})
            return "created", int(made["id"])
        if mine.body == body:
            return "unchanged", mine.id
        self.request(self.edit_method, self.comment_path(pr, mine.id), {"body": body})
        return "updated", mine.id

    def set_status(self, sha: str, state: State, context: str, description: str,
                   target_url: str | None = None) -> None:
        desc = description if len(description) <= DESCRIPTION_MAX else description[: DESCRIPTION_MAX - 1] + "…"
        path, body = self.status_request(sha, state, context, desc, target_url)
        self.request("POST", path, body)


def _owner_repo(repository: str) -> str:
    owner, sep, name = repository.strip("/").partition("/")
    if not sep or not owner or not name or "/" in name:
        raise Stalled(f"git_host.repository {repository!r} is not owner/name")
    return f"{urllib.parse.quote(owner, safe='')}/{urllib.parse.quote(name, safe='')}"


class GitHub(Client):
    provider = "github"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28"}

    def comments_path(self, pr: int) -> str:
        return f"/repos/{_owner_repo(self.host.repository)}/issues/{pr}/comments"

    def comment_path(self, pr: int, comment_id: int) -> str:
        return f"/repos/{_owner_repo(self.host.repository)}/issues/comments/{comment_id}"

    def status_request(self, sha: str, state: State, context: str, description: str,
                       target_url: str | None) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"state": state, "context": context, "description": description}
        if target_url:
            body["target_url"] = target_url
        return f"/repos/{_owner_repo(self.host.repository)}/statuses/{sha}", body


class Gitea(GitHub):
    provider = "gitea"
    paged = False  # GET /repos/{o}/{r}/issues/{n}/comments takes `since` and `before` only, and returns them all

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self._token}"}


class GitLab(Client):
    provider = "gitlab"
    edit_method = "PUT"

    def auth_headers(self) -> dict[str, str]:
        return {"PRIVATE-TOKEN": self._token}

    @property
    def project(self) -> str:
        return urllib.parse.quote(self.host.repository.strip("/"), safe="")

    def comments_path(self, pr: int) -> str:
        return f"/projects/{self.project}/merge_requests/{pr}/notes"

    def comment_path(self, pr: int, comment_id: int) -> str:
        return f"/projects/{self.project}/merge_requests/{pr}/notes/{comment_id}"

    def status_request(self, sha: str, state: State, context: str, description: str,
                       target_url: str | None) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"state": "failed" if state == "failure" else state, "name": context,
                                "description": description}
        if target_url:
            body["target_url"] = target_url
        return f"/projects/{self.project}/statuses/{sha}", body


def client_for(host: GitHost, token: str | None = None) -> Client:
    cls: type[Client] = {"github": GitHub, "gitlab": GitLab, "gitea": Gitea}[host.provider]
    return cls(host, token)
