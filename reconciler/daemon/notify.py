"""Notifications: a POST per transition (deployed, failed, recovered, drift found) to each configured URL.

Why so little: which events exist and when they fire is decided by `conditions.py` (transitions only, never every
poll); this module only delivers. A notification is a courtesy, not part of the reconcile: it is sent from a
small thread pool with a short timeout so a slow chat server never holds a deploy, and a failure is logged and
counted, never raised. Two body shapes: our JSON (`{"event", "cluster", "revision", "message", "at"}`) for
programs, and Slack's incoming-webhook shape (`{"text": ...}`), which Mattermost, Rocket.Chat, Discord's
`/slack` endpoints and Microsoft Teams workflows accept as well.

URLs may carry tokens (Slack's do), so they are logged redacted: scheme, host and the first path segment only.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal
from urllib.parse import urlsplit

from reconciler.daemon.conditions import Event

log = logging.getLogger("zato_gitops.notify")

Poster = Callable[[str, bytes, float], int]

ICONS = {"deployed": ":white_check_mark:", "recovered": ":white_check_mark:", "failed": ":x:", "drift": ":warning:"}


def safe_url(url: str) -> str:
    """`https://hooks.slack.com/services/T000/B000/XXXX` -> `https://hooks.slack.com/services/...`."""
    parts = urlsplit(url)
    first = parts.path.strip("/").split("/", 1)[0]
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}/{first}{'/...' if parts.path.strip('/') != first else ''}"


def body(event: Event, fmt: Literal["json", "slack"]) -> bytes:
    data: dict[str, Any]
    if fmt == "slack":
        data = {"text": f"{ICONS.get(event.kind, '')} zato-gitops {event.kind}: {event.message}".strip()}
    else:
        data = event.to_dict() | {"source": "zato-gitops"}
    return json.dumps(data).encode("utf-8")


def http_post(url: str, data: bytes, timeout: float) -> int:
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "zato-gitops"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return int(resp.status)


class Notifier:
    def __init__(
        self, urls: Iterable[str], fmt: Literal["json", "slack"] = "json", *, timeout: float = 5.0,
        post: Poster = http_post, on_result: Callable[[bool], None] | None = None,
    ) -> None:
        self.urls = list(urls)
        self.fmt = fmt
        self.timeout = timeout
        self.post = post
        self.on_result = on_result or (lambda _ok: None)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="notify") if self.urls else None

    def send(self, events: Iterable[Event]) -> list[Future[None]]:
        """Queue one POST per event and URL; returns the futures (tests wait on them, the daemon does not)."""
        futures: list[Future[None]] = []
        if self._pool is None:
            return futures
        for event in events:
            data = body(event, self.fmt)
            for url in self.urls:
                futures.append(self._pool.submit(self._deliver, url, data, event))
        return futures

    def _deliver(self, url: str, data: bytes, event: Event) -> None:
        try:
            status = self.post(url, data, self.timeout)
            ok = 200 <= status < 300
            if not ok:
                log.warning("notification %s to %s answered HTTP %s", event.kind, safe_url(url), status)
        except urllib.error.HTTPError as e:
            ok = False
            log.warning("notification %s to %s answered HTTP %s", event.kind, safe_url(url), e.code)
        except (OSError, ValueError) as e:
            ok = False
            log.warning("notification %s to %s failed: %s", event.kind, safe_url(url), type(e).__name__)
        self.on_result(ok)

    def close(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait)
