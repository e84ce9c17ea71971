"""Commit statuses per cluster (`zato-gitops/<cluster>`), posted in the background so a deploy never waits on them.

Flux's notification-controller sets a status per deployment; people see on the commit whether it reached every
server. Posting is a side show: a git host that is down or refuses the token must never fail, slow down or stop
a deploy. So statuses go through a queue and one worker thread, in order (a `pending` is never posted after the
`success` it precedes), each retried with a doubling delay; a status that still cannot be posted is logged and
counted (`on_result`, which the daemon turns into `/metrics`), and the deploy goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.errors import ReconcilerError
from reconciler.githost.client import Client, State

log = logging.getLogger(__name__)

CONTEXT_PREFIX = "zato-gitops/"


@dataclass(frozen=True)
class StatusUpdate:
    sha: str
    cluster: str
    state: State
    description: str
    target_url: str | None = None

    @property
    def context(self) -> str:
        return CONTEXT_PREFIX + self.cluster


#: result is "posted", "retried" (one failed attempt that will be tried again) or "failed" (given up)
ResultHook = Callable[[str, StatusUpdate], None]


class StatusPoster:
    """Posts commit statuses in order, in a worker thread, retrying each a few times."""

    def __init__(
        self, client: Client, *, retries: int = 3, retry_delay: float = 2.0, on_result: ResultHook | None = None,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.client = client
        self.retries = retries
        self.retry_delay = retry_delay
        self.on_result: ResultHook = on_result or (lambda _r, _u: None)
        self._stop = threading.Event()
        #: waits between retries; returns True when the poster is being closed (the waiting stops then)
        self._sleep = sleep or self._stop.wait
        self._queue: queue.Queue[StatusUpdate | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def post(self, update: StatusUpdate) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="commit-statuses", daemon=True)
                self._thread.start()
        self._queue.put(update)

    def _work(self) -> None:
        while True:
            update = self._queue.get()
            try:
                if update is None:
                    return
                self._post_one(update)
            finally:
                self._queue.task_done()

    def _post_one(self, u: StatusUpdate) -> None:
        delay = self.retry_delay
        for attempt in range(self.retries + 1):
            try:
                self.client.set_status(u.sha, u.state, u.context, u.description, u.target_url)
            except ReconcilerError as e:
                last = attempt == self.retries
                log.warning("commit status %s %s on %s not posted (attempt %d of %d): %s", u.context, u.state,
                            u.sha[:12], attempt + 1, self.retries + 1, e.message,
                            extra={"event": "status-failed", "cluster": u.cluster, "revision": u.sha})
                self.on_result("failed" if last else "retried", u)
                if last or self._sleep(delay):
                    return
                delay *= 2
            else:
                log.info("commit status %s %s on %s", u.context, u.state, u.sha[:12],
                         extra={"event": "status-posted", "cluster": u.cluster, "revision": u.sha})
                self.on_result("posted", u)
                return

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued status was posted or given up (True), or `timeout` passed (False)."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def close(self) -> None:
        """Stop after what is queued; retries waiting for their delay give up at once."""
        self._stop.set()
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
