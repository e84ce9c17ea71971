"""A cluster lease kept on the cluster's own servers, so two reconcilers never work on one cluster at once.

The state-dir lock (`engine.chain.StateLock`) only keeps one reconciler per state dir; two operators, or a daemon
and someone's laptop, each have their own. Both would walk the servers, collide on a restart and roll back each
other's files (issue 8). So before observing a cluster (the plan must be made under the lease), a reconciler takes
a lease in the filesystem of the cluster's first reachable server, at `<server dir>/zato-gitops.lease`: one line
with a random token, the expiry, since when it is held, the owner (user@host), its pid and its state dir.

How it is taken atomically: a fixed sh script (every value a positional parameter) holds `flock` on
`zato-gitops.lease.lock` for the few milliseconds it reads and rewrites the lease, so two scripts never interleave
and the kernel releases the lock if a script dies mid-way (a `mkdir` lock would leave a directory to clean up).
The lease itself is not a held flock: it must survive our SSH connection dropping for a moment, and be renewed
and expire on the server's clock alone. The holder renews it every third of its TTL while it works; it expires
by itself when the holder dies or loses the network. A lease whose expiry passed is taken over; so is one whose
owner is on this very machine and whose pid is gone (a reconciler killed a moment ago) or whose state dir is ours
(we hold that dir's lock, so it cannot be working), checked by its token so two reconcilers taking over at once
cannot both win. A holder that could not renew stops before it touches
another server.

Where: the first server of the cluster (manifest order) that answers. Two reconcilers that disagree on what answers
could then hold leases on different servers, so a lease that is not on the first server is partial: it lets its
holder finish a server already in flight (bring back one it stopped), never start another one; and apply refuses
the cluster's new work under it (the first server cannot be observed then anyway).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler.errors import Busy, Interrupted, ReconcilerError, Stalled, Unreachable
from reconciler.locks import pid_alive
from reconciler.transport import Transport, script_argv

LEASE_FILE = "zato-gitops.lease"

LEASE_SCRIPT = r"""
act=$1; f=$2; token=$3; ttl=$4; owner=$5; pid=$6; state=$7; force=$8
command -v flock >/dev/null 2>&1 || { echo "@@error flock(1) is not installed on this server"; exit 5; }
exec 9>>"$f.lock" || { echo "@@error cannot open $f.lock"; exit 3; }
flock -w 10 9 || { echo "@@error $f.lock stayed locked for 10 s"; exit 4; }
now=$(date +%s)
cur=""; [ -s "$f" ] && cur=$(head -n 1 -- "$f")
tab=$(printf '\t')
IFS=$tab read -r ctoken cexp csince cowner cpid cstate <<EOF
$cur
EOF
case $cexp in ''|*[!0-9]*) cexp=0 ;; esac
write() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$token" "$((now + ttl))" "$1" "$owner" "$pid" "$state" > "$f.tmp" &&
    mv -f -- "$f.tmp" "$f"
}
case $act in
  acquire)
    if [ -z "$cur" ] || [ "$ctoken" = "$token" ] || [ "$cexp" -le "$now" ] || \
       { [ -n "$force" ] && [ "$ctoken" = "$force" ]; }; then
      since=$now; [ "$ctoken" = "$token" ] && since=$csince
      write "$since" || { echo "@@error cannot write $f"; exit 3; }
      echo "@@held $now"
    else
      echo "@@taken $now"; printf '%s\n' "$cur"
    fi ;;
  renew)
    if [ "$ctoken" = "$token" ]; then
      write "$csince" || { echo "@@error cannot write $f"; exit 3; }
      echo "@@held $now"
    else
      echo "@@lost $now"; printf '%s\n' "$cur"
    fi ;;
  release)
    [ "$ctoken" = "$token" ] && rm -f -- "$f"
    echo "@@released $now" ;;
esac
"""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as written on the server."""

    token: str
    expires: int  # seconds since the epoch, on the server's clock
    since: int
    owner: str  # user@host
    pid: int
    state_dir: str

    @classmethod
    def parse(cls, line: str) -> Holder | None:
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 6 or not parts[1].isdigit() or not parts[2].isdigit() or not parts[4].isdigit():
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]), parts[3], int(parts[4]), parts[5])


class LeaseHeld(Busy):
    """Another reconciler holds the cluster's lease: that passes when it finishes (or its lease expires)."""

    def __init__(self, cluster: str, holder: Holder, server: str) -> None:
        self.holder = holder
        super().__init__(
            f"cluster {cluster} is being reconciled by {holder.owner} (pid {holder.pid}) since {_utc(holder.since)} "
            f"(state dir {holder.state_dir}; lease on {server} until {_utc(holder.expires)})",
            hint="wait for it to finish and run again (a daemon retries by itself), or set `lease_wait: SECONDS` "
                 "in the --config file to wait for it; a lease whose owner died expires on its own",
        )


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LeaseSite:
    """A server the lease may live on: its name, its directory and the transport to its machine."""

    server: str
    server_dir: str
    transport: Transport


class Lease:
    def __init__(
        self,
        cluster: str,
        sites: Sequence[LeaseSite],
        *,
        owner: str,
        state_dir: str,
        ttl: float = 60.0,
        wait: float = 0.0,
        pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        alive: Callable[[int], bool] = pid_alive,
        hostname: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.sites = list(sites)
        self.owner = owner.replace("\t", " ").replace("\n", " ")
        self.state_dir = state_dir.replace("\t", " ").replace("\n", " ")
        self.ttl = max(3, int(ttl))
        self.wait = wait
        self.pid = os.getpid() if pid is None else pid
        self.clock = clock
        self.sleep = sleep
        self.alive = alive
        self.hostname = hostname or socket.gethostname()
        self.token = uuid.uuid4().hex
        self.site: LeaseSite | None = None
        self._valid_until = 0.0
        self._lost = ""
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # --- the script ------------------------------------------------------------------------------------------
    def _run(self, site: LeaseSite, action: str, force: str = "") -> tuple[str, Holder | None]:
        path = f"{site.server_dir.rstrip('/')}/{LEASE_FILE}"
        r = site.transport.run(script_argv(LEASE_SCRIPT, action, path, self.token, str(self.ttl), self.owner,
                                           str(self.pid), self.state_dir, force), timeout=30)
        lines = r.text().splitlines()
        head = lines[0].split(" ", 1) if lines else [""]
        if head[0] == "@@error" or not r.ok:
            raise Stalled(f"{site.server}: cannot keep the cluster lease in {path}: "
                          f"{(head[1] if len(head) > 1 else r.err_text())[:200]}",
                          hint="the server's user must be able to write in its server dir, with flock(1) installed")
        return head[0].removeprefix("@@"), Holder.parse(lines[1]) if len(lines) > 1 else None

    # --- taking, renewing, releasing -------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lease on the first reachable server, waiting up to `wait` seconds for another holder."""
        deadline = self.clock() + self.wait
        while True:
            started = self.clock()
            site, answer, holder = self._try_sites()
            if answer == "taken" and holder is not None and self._owner_dead(holder):
                answer, holder = self._run(site, "acquire", force=holder.token)
            if answer == "held":
                self.site = site
                self._valid_until = started + self.ttl
                return
            if holder is None:
                raise ReconcilerError(f"{site.server}: unexpected answer from the lease script: {answer!r}")
            if self.clock() >= deadline:
                raise LeaseHeld(self.cluster, holder, site.server)
            self.sleep(min(1.0, max(0.05, deadline - self.clock())))

    def _try_sites(self) -> tuple[LeaseSite, str, Holder | None]:
        last: Unreachable | None = None
        for site in self.sites:
            try:
                answer, holder = self._run(site, "acquire")
                return site, answer, holder
            except Unreachable as e:
                last = e
        raise Unreachable(f"cluster {self.cluster}: no server could be reached to take its lease"
                          + (f" ({last.message})" if last else ""))

    def _owner_dead(self, holder: Holder) -> bool:
        """A holder on this machine whose process is gone (killed a moment ago) needs no wait for the expiry; nor
        does one with our own state dir, whose lock the caller holds (a lease left by an earlier run of ours)."""
        host = holder.owner.rpartition("@")[2]
        if host != self.hostname:
            return False
        return holder.state_dir == self.state_dir or (holder.pid != self.pid and not self.alive(holder.pid))

    def renew(self) -> None:
        assert self.site is not None
        started = self.clock()
        answer, holder = self._run(self.site, "renew")
        if answer != "held":
            who = f"{holder.owner} (pid {holder.pid})" if holder else "nobody"
            self._lost = f"the lease of cluster {self.cluster} was taken over by {who}"
            return
        self._valid_until = started + self.ttl

    @property
    def full(self) -> bool:
        """Whether the lease sits on the cluster's first server, where every reconciler looks first. One taken on
        a later server (the first did not answer) only lets us finish a server already in flight."""
        return self.site is not None and self.site is self.sites[0]

    def check(self) -> None:
        """Raise `Interrupted` unless the lease is ours, full, for at least another third of its TTL."""
        if self._lost:
            raise Interrupted(self._lost)
        if not self.full:
            raise Interrupted(f"the lease of cluster {self.cluster} is on {self.site.server if self.site else '?'}: "
                              f"{self.sites[0].server} did not answer, so no further server is started")
        if self.clock() > self._valid_until - self.ttl / 3:
            raise Interrupted(f"the lease of cluster {self.cluster} could not be renewed on "
                              f"{self.site.server if self.site else '?'}")

    def release(self) -> None:
        if self.site is None:
            return
        with contextlib.suppress(ReconcilerError):
            self._run(self.site, "release")
        self.site = None

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with contextlib.suppress(ReconcilerError):
                self.renew()

    @contextlib.contextmanager
    def held(self) -> Iterator[Lease]:
        """Hold the lease (renewed in the background) for the block."""
        self.acquire()
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease-{self.cluster}", daemon=True)
        self._renewer.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._renewer.join()
            self.release()
