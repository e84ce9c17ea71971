"""The daemon's HTTP endpoint: health, readiness, metrics, status, control, and the git hosts' webhooks.

Why the standard library (`ThreadingHTTPServer`) and not a web framework: seven routes, no templates, and the
daemon must not pull a second event loop or web stack in beside APScheduler's threads. Each request runs on its
own thread and only reads the status snapshot or asks the daemon to wake up, so a slow client never holds a
reconcile.

Security model, route by route:
- `GET /healthz /readyz /metrics /api/status` are read-only and say nothing secret (names, revisions, states),
  like Flux's and Argo CD's metrics endpoints; put them behind the network you scrape from.
- `POST /hooks/{github,gitlab,gitea,generic}` are what the internet (the git host) calls, so every body is
  checked against the shared `webhook_secret` from the daemon's config (never from the repository, which anyone
  with push access could change): GitHub `X-Hub-Signature-256: sha256=<hex>` and Gitea `X-Gitea-Signature: <hex>`
  are HMAC-SHA256 of the body; the generic hook takes `X-Signature-256: sha256=<hex>` the same way; GitLab sends
  no HMAC at all, only the secret itself in `X-Gitlab-Token`, which we compare in constant time (so for GitLab
  the secret travels with every delivery: use https). A bad or missing signature is 401 and triggers nothing; a
  body over 1 MiB is 413 and is not read. A valid delivery only *wakes the poll*: the daemon then asks the remote
  for the head itself, so a forged or replayed payload can at worst cause one extra poll, never a deploy of
  something that is not on the branch.
- `POST /api/reconcile /api/suspend /api/resume` change what the daemon does, so they need the bearer token the
  daemon writes, readable by its own user only, to `<state_dir>/daemon.json`: whoever can read the state dir
  can drive the daemon, and nobody else, whichever address it listens on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from reconciler.errors import ReconcilerError

log = logging.getLogger("zato_gitops.http")

MAX_BODY = 1024 * 1024
DRAIN_LIMIT = 16 * MAX_BODY
PROVIDERS = ("github", "gitlab", "gitea", "generic")


class DaemonAPI(Protocol):
    """What the HTTP endpoint needs from the daemon."""

    branch: str
    webhook_secret: str | None
    api_token: str

    def status_dict(self) -> dict[str, Any]: ...
    def readiness(self) -> tuple[bool, str]: ...
    def metrics_text(self) -> tuple[bytes, str]: ...
    def request_reconcile(self, clusters: list[str] | None, why: str, *, force: bool) -> None: ...
    def set_suspended(self, cluster: str, suspended: bool) -> None: ...
    def count_webhook(self, provider: str, result: str) -> None: ...


# --- webhook checks (pure) -------------------------------------------------------------------------------------


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def verify_signature(provider: str, headers: dict[str, str], body: bytes, secret: str) -> bool:
    """Whether the delivery carries a valid signature (or, for GitLab, the right token). `headers` keys are
    lower case. Compared in constant time."""
    if not secret:
        return False
    if provider == "gitlab":
        token = headers.get("x-gitlab-token")
        return token is not None and _eq(token, secret)
    if provider == "gitea":
        given = headers.get("x-gitea-signature")
        if given is None:
            # recent Gitea and Forgejo also send GitHub's header
            given = headers.get("x-hub-signature-256", "").removeprefix("sha256=")
        return bool(given) and _eq(given.strip().lower(), _hmac_hex(secret, body))
    header = {"github": "x-hub-signature-256", "generic": "x-signature-256"}.get(provider)
    if header is None:
        return False
    given = headers.get(header, "").strip()
    if not given.startswith("sha256="):
        return False
    return _eq(given.removeprefix("sha256=").lower(), _hmac_hex(secret, body))


def push_ref(provider: str, headers: dict[str, str], payload: Any) -> tuple[str, str | None]:
    """What a verified delivery means: ("push", ref), ("ping", None) or ("ignore", why).

    A generic delivery without `ref` or `branch` means "reconcile now" and returns ("push", None)."""
    event = {
        "github": headers.get("x-github-event", ""),
        "gitea": headers.get("x-gitea-event", "") or headers.get("x-github-event", ""),
        "gitlab": headers.get("x-gitlab-event", ""),
    }.get(provider, "push")
    if event in ("ping",) or (provider == "gitlab" and event == "Test Hook"):
        return "ping", None
    if provider == "gitlab":
        kind = payload.get("object_kind") or payload.get("event_name") if isinstance(payload, dict) else None
        if event not in ("Push Hook", "System Hook") and kind != "push":
            return "ignore", f"GitLab event {event or kind!r} is not a push"
    elif provider in ("github", "gitea") and event != "push":
        return "ignore", f"event {event!r} is not a push"
    if not isinstance(payload, dict):
        return ("push", None) if provider == "generic" else ("ignore", "the body is not a JSON object")
    ref = payload.get("ref")
    if ref is None and provider == "generic" and isinstance(payload.get("branch"), str):
        ref = "refs/heads/" + payload["branch"]
    if ref is None:
        return ("push", None) if provider == "generic" else ("ignore", "the push names no ref")
    return "push", str(ref)


def is_watched(ref: str | None, branch: str) -> bool:
    return ref is None or ref == f"refs/heads/{branch}" or ref == branch


# --- the server ------------------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "zato-gitops"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s %s", self.address_string(), format % args)

    # -- helpers --
    @property
    def app(self) -> DaemonAPI:
        return self.server.app

    _body_read = False

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        if self.command == "POST" and not self._body_read:
            # the request's body was not read: close, or its bytes would be parsed as the next request
            self.close_connection = True
        self.send_response(status)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, (json.dumps(data, indent=2) + "\n").encode("utf-8"))

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 411/413 (the body is then not read, and the connection
        is closed so its unread bytes are not taken for the next request)."""
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "send a Content-Length"})
                return None
            self._body_read = True
            return b""
        n = int(length)
        if n > MAX_BODY:
            # discarded unparsed, in small chunks, so the client gets to read our 413 instead of a reset
            # connection; past DRAIN_LIMIT we just close
            left = min(n, DRAIN_LIMIT)
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
            self._body_read = n <= DRAIN_LIMIT
            self.close_connection = True
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"bodies over {MAX_BODY} bytes are refused"})
            return None
        data = self.rfile.read(n)
        self._body_read = True
        return data

    # -- routes --
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            ok, why = self.app.readiness()
            self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
        elif path == "/metrics":
            body, ctype = self.app.metrics_text()
            self._send(200, body, ctype)
        elif path == "/api/status":
            self._json(200, self.app.status_dict())
        else:
            self._json(404, {"error": "not found", "routes": ["/healthz", "/readyz", "/metrics", "/api/status"]})

    def do_POST(self) -> None:
        self._body_read = False
        path = self.path.split("?", 1)[0]
        if path.startswith("/hooks/"):
            self._hook(path.removeprefix("/hooks/"))
        elif path in ("/api/reconcile", "/api/suspend", "/api/resume"):
            self._control(path.removeprefix("/api/"))
        else:
            self._json(404, {"error": "not found"})

    def _control(self, action: str) -> None:
        auth = self.headers.get("Authorization", "")
        if not (auth.startswith("Bearer ") and _eq(auth.removeprefix("Bearer ").strip(), self.app.api_token)):
            self._json(401, {"error": "needs the token from <state_dir>/daemon.json (use the zato-gitops CLI)"})
            return
        body = self._read_body()
        if body is None:
            return
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            self._json(400, {"error": "the body is not JSON"})
            return
        clusters = data.get("clusters") if isinstance(data, dict) else None
        if clusters is not None and not (isinstance(clusters, list) and all(isinstance(c, str) for c in clusters)):
            self._json(400, {"error": "`clusters` must be a list of names"})
            return
        try:
            if action == "reconcile":
                self.app.request_reconcile(clusters or None, "asked through the API", force=True)
                self._json(202, {"accepted": True, "clusters": clusters or "all"})
                return
            if not clusters:
                self._json(400, {"error": "name the clusters"})
                return
            for c in clusters:
                self.app.set_suspended(c, action == "suspend")
            self._json(200, {"clusters": clusters, "suspended": action == "suspend"})
        except KeyError as e:
            self._json(404, {"error": f"no cluster {e.args[0]!r}"})
        except ReconcilerError as e:  # a standby that cannot reach the leader
            self._json(503, {"error": e.message})

    def _hook(self, provider: str) -> None:
        if provider not in PROVIDERS:
            self._json(404, {"error": f"unknown webhook provider; use one of /hooks/{', /hooks/'.join(PROVIDERS)}"})
            return
        app = self.app
        body = self._read_body()
        if body is None:
            app.count_webhook(provider, "too-large")
            return
        secret = app.webhook_secret
        if not secret:
            app.count_webhook(provider, "unauthorized")
            self._json(403, {"error": "webhooks are off: no webhook_secret in the daemon's config"})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        if not verify_signature(provider, headers, body, secret):
            app.count_webhook(provider, "unauthorized")
            log.warning("webhook %s from %s refused: bad or missing signature", provider, self.client_address[0])
            self._json(401, {"error": "bad or missing signature"})
            return
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError:
            if provider != "generic":
                app.count_webhook(provider, "bad-request")
                self._json(400, {"error": "the body is not JSON"})
                return
            payload = None
        kind, ref = push_ref(provider, headers, payload)
        if kind == "ping":
            app.count_webhook(provider, "ignored")
            self._json(200, {"pong": True})
            return
        if kind == "ignore" or not is_watched(ref, app.branch):
            why = ref if kind == "ignore" else f"push to {ref}, not to {app.branch}"
            app.count_webhook(provider, "ignored")
            self._json(200, {"accepted": False, "why": why})
            return
        app.count_webhook(provider, "accepted")
        app.request_reconcile(None, f"{provider} webhook", force=False)
        self._json(202, {"accepted": True})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: DaemonAPI) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all addresses)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
