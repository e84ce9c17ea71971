"""A small recording HTTP server (stdlib) that plays GitHub, GitLab or Gitea for the git host clients.

It accepts only what each provider documents (method, path, auth header, JSON body and its allowed values) and
answers 404/422 otherwise, so a client that strays from the documented API fails the test, and it records every
request. Comments are kept, so "created once, then updated" is checked against its state."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "s3cret-token"

#: provider -> (auth header, its value, comments path, comment path, edit method, status path, status fields)
DOCUMENTED: dict[str, dict[str, Any]] = {
    "github": {
        "auth": ("Authorization", f"Bearer {TOKEN}"),
        "comments": r"/repos/acme/zato-services/issues/(?P<pr>\d+)/comments",
        "comment": r"/repos/acme/zato-services/issues/comments/(?P<id>\d+)",
        "edit": "PATCH",
        "status": r"/repos/acme/zato-services/statuses/(?P<sha>[0-9a-f]{40})",
        "states": {"pending", "success", "failure", "error"},
        "context_key": "context",
        "page_size": "per_page",
    },
    "gitea": {
        "auth": ("Authorization", f"token {TOKEN}"),
        "comments": r"/repos/acme/zato-services/issues/(?P<pr>\d+)/comments",
        "comment": r"/repos/acme/zato-services/issues/comments/(?P<id>\d+)",
        "edit": "PATCH",
        "status": r"/repos/acme/zato-services/statuses/(?P<sha>[0-9a-f]{40})",
        "states": {"pending", "success", "error", "failure", "warning"},
        "context_key": "context",
        "page_size": None,  # the issue comments list is not paged: every comment in one answer
    },
    "gitlab": {
        "auth": ("PRIVATE-TOKEN", TOKEN),
        "comments": r"/projects/acme%2Fzato-services/merge_requests/(?P<pr>\d+)/notes",
        "comment": r"/projects/acme%2Fzato-services/merge_requests/(?P<pr>\d+)/notes/(?P<id>\d+)",
        "edit": "PUT",
        "status": r"/projects/acme%2Fzato-services/statuses/(?P<sha>[0-9a-f]{40})",
        "states": {"pending", "running", "success", "failed", "canceled"},
        "context_key": "name",
        "page_size": "per_page",
    },
}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased: HTTP header names are case-insensitive
    body: Any


@dataclass
class HostBed:
    provider: str
    prefix: str = ""
    requests: list[Recorded] = field(default_factory=list)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    #: answer this many status posts with 503 first (a git host having a bad minute)
    fail_statuses: int = 0
    next_id: int = 100
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        bed = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _answer(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with bed.lock:
                    bed.requests.append(rec)
                    code, answer = bed.route(rec)
                self._answer(code, answer)

            do_GET = do_POST = do_PATCH = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.prefix}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def route(self, r: Recorded) -> tuple[int, Any]:
        doc = DOCUMENTED[self.provider]
        name, value = doc["auth"]
        if r.headers.get(name.lower()) != value:
            return 401, {"message": "Bad credentials"}
        path, _, query = r.path.partition("?")
        if not path.startswith(self.prefix):
            return 404, {"message": "Not Found"}
        path = path[len(self.prefix):]
        if r.method in ("POST", "PATCH", "PUT") and r.headers.get("content-type") != "application/json":
            return 415, {"message": "expected JSON"}
        if m := re.fullmatch(doc["comments"], path):
            if r.method == "GET":
                params = dict(p.split("=", 1) for p in query.split("&") if p)
                mine = [c for c in self.comments.values() if c["pr"] == int(m["pr"])]
                if doc["page_size"] is None:
                    return (422, {"message": "unknown parameter"}) if params else (200, mine)
                size, page = int(params.get(doc["page_size"], "30")), int(params.get("page", "1"))
                return 200, mine[(page - 1) * size: page * size]
            if r.method == "POST":
                if not isinstance(r.body, dict) or set(r.body) != {"body"}:
                    return 422, {"message": "body must be {body}"}
                self.next_id += 1
                self.comments[self.next_id] = {"id": self.next_id, "pr": int(m["pr"]), "body": r.body["body"]}
                return 201, self.comments[self.next_id]
        if (m := re.fullmatch(doc["comment"], path)) and r.method == doc["edit"]:
            cid = int(m["id"])
            if cid not in self.comments or not isinstance(r.body, dict) or set(r.body) != {"body"}:
                return 404 if cid not in self.comments else 422, {"message": "no"}
            self.comments[cid]["body"] = r.body["body"]
            return 200, self.comments[cid]
        if (m := re.fullmatch(doc["status"], path)) and r.method == "POST":
            b = r.body if isinstance(r.body, dict) else {}
            allowed = {"state", "target_url", "description", doc["context_key"]}
            if b.get("state") not in doc["states"] or not set(b) <= allowed or doc["context_key"] not in b:
                return 422, {"message": f"invalid status {b}"}
            if self.fail_statuses:
                self.fail_statuses -= 1
                return 503, {"message": "try later"}
            self.statuses.append({"sha": m["sha"], **b})
            return 201, {"id": len(self.statuses), **b}
        return 404, {"message": "Not Found"}
