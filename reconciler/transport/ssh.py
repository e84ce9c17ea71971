"""SSH transport: the reconciler's way onto a remote server's machine; the only module importing paramiko.

Why it looks like this:

* Connection reuse matters more than anything else (a full `ssh host true` costs ~300 ms, an exec on a
  live connection 4-8 ms), so `SSHPool` keeps ONE paramiko connection per (host, port, user), shared by every
  server on that host and by every call, from many threads at once (paramiko multiplexes channels).
* paramiko leaves Nagle on; with delayed ACKs that adds ~40 ms to every exec round trip. We connect through
  our own socket with `TCP_NODELAY` set.
* Host keys are checked strictly against ONE known_hosts file and never added automatically: an unknown or
  changed key is a `HostKeyError` (a person must verify it), with the exact commands to fix it in the hint.
* Every library exception is mapped, at this seam, onto `errors` (`Unreachable` for network trouble and
  timeouts, `Stalled` for what a person must fix) with `raise ... from e`, and messages name the server.
* paramiko imports `invoke` (and with it asyncio: ~35 ms and 5 MB of every run's start-up) only to run an
  ssh_config `Match exec` line. We never read an ssh_config, so unless something in this process imported it
  already, that import is made to fail at once, which paramiko.config allows (it raises only if such a line is
  ever evaluated).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import logging
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
import paramiko  # noqa: E402

from reconciler import errors  # noqa: E402
from reconciler.transport import RunResult, SSHOptions  # noqa: E402

__all__ = ["SSHOptions", "SSHPool", "SSHTransport"]

_Key = tuple[str, int, str]


class _QuietRetriedOpens(logging.Filter):
    """paramiko logs a refused channel open at ERROR; `_channel` retries those, so they are not errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED" not in record.getMessage()


logging.getLogger("paramiko.transport").addFilter(_QuietRetriedOpens())
_CHUNK = 32768  # one SSH packet's worth
_SUBSYSTEM_TRIES = 3  # sessions closed at the SFTP subsystem request before it counts as missing
_POLL = 0.25  # how often blocked stream threads look at their stop flag
_WITHOUT_STDIN = " </dev/null"
_WITH_STDIN = "; __zg_status=$?; cat >/dev/null; exit $__zg_status"


def _fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _UnknownHostKey(paramiko.SSHException):
    """Raised by `_Reject` so the offered key's fingerprint reaches the error message."""

    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("host key not in known_hosts")
        self.key = key


class _Reject(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, remembering which key was offered."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise _UnknownHostKey(key)


def _connect_error(
    e: BaseException, *, label: str, host: str, port: int, user: str, options: SSHOptions
) -> errors.ReconcilerError:
    """Map what went wrong while connecting onto an error a person can act on."""
    addr = f"{host}:{port}"
    kh = options.known_hosts
    name = _known_hosts_name(host, port)
    scan = f"ssh-keyscan {'' if port == 22 else f'-p {port} '}{host}"
    if isinstance(e, _UnknownHostKey):
        return errors.HostKeyError(
            f"{label}: the SSH host key of {addr} ({_fingerprint(e.key)}) is not in {kh}; "
            f"refusing to connect",
            hint=(
                f"verify the key, then add it: `{scan} >> {kh}`, and compare `ssh-keygen -lf {kh}` with the "
                f"fingerprint the host's administrator reads on the host (`ssh-keygen -lf "
                f"/etc/ssh/ssh_host_ed25519_key.pub`)"
            ),
        )
    if isinstance(e, paramiko.BadHostKeyException):
        return errors.HostKeyError(
            f"{label}: the SSH host key of {addr} has CHANGED: it offers {_fingerprint(e.key)} but {kh} "
            f"records {_fingerprint(e.expected_key)}. Someone could be eavesdropping (a man-in-the-middle "
            f"attack), or the host was reinstalled; refusing to connect",
            hint=(
                f"find out why the key changed; only if it is legitimate, remove the old entry with "
                f"`ssh-keygen -R '{name}' -f {kh}`, then add the new one after verifying its fingerprint: "
                f"`{scan} >> {kh}` and compare `ssh-keygen -lf {kh}` with the host's"
            ),
        )
    if isinstance(e, paramiko.AuthenticationException) or (
        isinstance(e, paramiko.SSHException) and "authentication methods" in str(e)
    ):
        how = (
            f"the key {options.identity}"
            if options.identity
            else "the SSH agent or the default keys (~/.ssh/id_*)"
        )
        return errors.Stalled(
            f"{label}: SSH authentication as {user!r} on {addr} failed ({e})",
            hint=(
                f"the reconciler logs in with {how}; its public key must be in ~{user}/.ssh/authorized_keys "
                f"on {host}, and that account must not be locked"
            ),
        )
    if isinstance(e, socket.gaierror):
        return errors.Unreachable(f"{label}: cannot resolve host {host!r} ({e.strerror or e})")
    if isinstance(e, TimeoutError | socket.timeout):
        return errors.Unreachable(
            f"{label}: connecting to {addr} timed out after {options.connect_timeout:g}s",
            hint="check that the host is up and that a firewall lets the SSH port through",
        )
    if isinstance(e, ConnectionRefusedError):
        return errors.Unreachable(
            f"{label}: {addr} refused the connection", hint="is sshd running on that host and port?"
        )
    if isinstance(e, OSError):
        return errors.Unreachable(f"{label}: cannot connect to {addr}: {e.strerror or e}")
    if "protocol banner" in str(e) or "Incompatible ssh" in str(e):
        return errors.Stalled(
            f"{label}: {addr} is not an SSH server (it answered, but not with an SSH banner)",
            hint="check the server's `port:` in the manifest: it must be the host's sshd port (22 unless changed), "
                 "not Zato's HTTP port",
        )
    return errors.Unreachable(f"{label}: the SSH handshake with {addr} failed: {e or type(e).__name__}")


class _Conn:
    """One live paramiko connection, shared by every server on its (host, port, user)."""

    def __init__(self, client: paramiko.SSHClient, sock: socket.socket, max_sessions: int) -> None:
        self.client = client
        self.sock = sock
        transport = client.get_transport()
        assert transport is not None
        self.transport: paramiko.Transport = transport
        # MaxSessions bounds the sessions open at once: one is kept for the SFTP channel and one as headroom,
        # because sshd frees a closed session's slot lazily (a refusal is still retried, see `_channel`).
        self.sessions = threading.BoundedSemaphore(max(1, max_sessions - 2))
        self.sftp_lock = threading.Lock()
        self.sftp: paramiko.SFTPClient | None = None

    def alive(self) -> bool:
        return self.transport.is_active()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.sftp is not None:
                self.sftp.close()
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.sock.close()


class _Slot:
    """Serialises connecting to one key, so N servers on a host open one connection, and a failed attempt is
    shared by the threads that waited for it instead of each waiting out its own timeout."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: _Conn | None = None
        self.attempts = 0
        self.failure: BaseException | None = None


class SSHPool:
    """One connection per (host, port, user), made on first use and reused by every transport and thread."""

    def __init__(self, options: SSHOptions | None = None) -> None:
        self.options = options or SSHOptions()
        self._lock = threading.Lock()
        self._slots: dict[_Key, _Slot] = {}
        self._closed = False
        #: a failed connect is final for this pool (`hand_over`): its next user reports it without waiting again
        self._failures_final = False

    def transport(self, server_label: str, host: str, port: int, user: str) -> SSHTransport:
        """A transport for one server. Nothing connects until its first `run` or `put`."""
        return SSHTransport(self, server_label, host, port, user)

    def connection_count(self) -> int:
        """Live connections held (for diagnostics and tests)."""
        with self._lock:
            return sum(1 for s in self._slots.values() if s.conn is not None and s.conn.alive())

    def hand_over(self) -> SSHPool:
        """This pool, for a next user in the same process (an apply whose no-op memo did not hold goes the full
        way with the connections it made): a host that just failed to connect is reported at once, not waited for
        a second time."""
        self._failures_final = True
        return self

    def close(self) -> None:
        """Close every connection. Transports from this pool must not be used afterwards."""
        with self._lock:
            self._closed = True
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            with slot.lock:
                if slot.conn is not None:
                    slot.conn.close()
                    slot.conn = None

    def __enter__(self) -> SSHPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals used by SSHTransport --------------------------------------------------------------------

    def _get(self, label: str, key: _Key) -> tuple[_Conn, bool]:
        """The live connection for key, connecting if needed; the flag says whether it was reused."""
        with self._lock:
            if self._closed:
                raise errors.Unreachable(f"{label}: the SSH connection pool is closed")
            slot = self._slots.setdefault(key, _Slot())
            seen = slot.attempts
        with slot.lock:
            if slot.conn is not None:
                if slot.conn.alive():
                    return slot.conn, True
                slot.conn.close()
                slot.conn = None
            if slot.failure is not None and (slot.attempts != seen or self._failures_final):
                # Another thread just tried while we waited and failed: report that, do not try again.
                failure = slot.failure
                raise self._error(failure, label, key) from failure
            slot.attempts += 1
            try:
                slot.conn = self._connect(key)
            except errors.ReconcilerError:
                raise
            except BaseException as e:
                slot.failure = e
                raise self._error(e, label, key) from e
            slot.failure = None
            return slot.conn, False

    def _error(self, e: BaseException, label: str, key: _Key) -> errors.ReconcilerError:
        host, port, user = key
        return _connect_error(e, label=label, host=host, port=port, user=user, options=self.options)

    def _evict(self, key: _Key, conn: _Conn) -> None:
        with self._lock:
            slot = self._slots.get(key)
        if slot is not None:
            with slot.lock:
                if slot.conn is conn:
                    slot.conn = None
        conn.close()

    def _connect(self, key: _Key) -> _Conn:
        host, port, user = key
        opts = self.options
        kh = opts.known_hosts
        if not kh.is_file():
            raise errors.HostKeyError(
                f"{user}@{host}:{port}: the known_hosts file {kh} does not exist; host keys are never "
                f"accepted automatically",
                hint=(
                    f"create it with the verified keys of your hosts, e.g. "
                    f"`ssh-keyscan {'' if port == 22 else f'-p {port} '}{host} >> {kh}`, then compare "
                    f"`ssh-keygen -lf {kh}` with the fingerprints shown on the hosts"
                ),
            )
        if opts.identity is not None and not opts.identity.is_file():
            raise errors.Stalled(
                f"{user}@{host}:{port}: the SSH identity file {opts.identity} does not exist",
                hint="point the identity setting at the reconciler's private key",
            )
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(kh))
        except (OSError, paramiko.SSHException) as e:
            raise errors.HostKeyError(
                f"{user}@{host}:{port}: cannot read the known_hosts file {kh}: {e}",
                hint="make it readable by the reconciler and check its format",
            ) from e
        client.set_missing_host_key_policy(_Reject())
        sock = socket.create_connection((host, port), timeout=opts.connect_timeout)
        try:
            if opts.tcp_nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            auth: dict[str, Any] = (
                {"key_filename": str(opts.identity), "allow_agent": False, "look_for_keys": False}
                if opts.identity is not None
                else {"allow_agent": True, "look_for_keys": True}
            )
            client.connect(
                host,
                port=port,
                username=user,
                sock=sock,
                timeout=opts.connect_timeout,
                banner_timeout=opts.connect_timeout,
                auth_timeout=opts.connect_timeout,
                channel_timeout=opts.connect_timeout,
                **auth,
            )
            conn = _Conn(client, sock, opts.max_sessions)
            if opts.keepalive > 0:
                conn.transport.set_keepalive(int(max(1, opts.keepalive)))
            return conn
        except BaseException:
            with contextlib.suppress(Exception):
                client.close()
            sock.close()
            raise


class SSHTransport:
    """One server's view of a pooled connection: commands run in their own channel, files go over SFTP.

    `close()` does nothing: the pool owns the connection and closes it in `SSHPool.close()`."""

    def __init__(self, pool: SSHPool, label: str, host: str, port: int, user: str) -> None:
        self.label = label
        self._pool = pool
        self._key: _Key = (host, port, user)

    def __repr__(self) -> str:
        return f"SSHTransport({self.label!r})"

    # -- the Transport protocol -----------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = 60.0) -> RunResult:
        """Run argv through the SSH user's login shell, which must be a POSIX shell (sh, dash, bash, ksh, zsh).

        The command line is `shlex.join(argv)` plus a fixed suffix: `</dev/null` without stdin, or, with
        stdin, `; s=$?; cat >/dev/null; exit $s`, so the remote side always reads our input to its end. That
        way sshd never closes the channel while we still send on it: paramiko builds a message under the
        channel lock and sends it after releasing it, so an EOF or data racing a close can reach sshd after
        our CLOSE, and sshd then drops the WHOLE connection ("packet referred to nonexistent channel",
        paramiko issues #1115, #1584, #1705), failing every server sharing it."""
        if not argv:
            raise ValueError("run() needs a non-empty argv")
        command = shlex.join(argv)
        command += _WITH_STDIN if stdin is not None else _WITHOUT_STDIN
        what = argv[0]
        deadline = time.monotonic() + timeout
        with self._channel(deadline, what, timeout) as (conn, chan):
            try:
                chan.exec_command(command)
            except (paramiko.SSHException, OSError, EOFError) as e:
                if not conn.alive():
                    self._pool._evict(self._key, conn)
                raise errors.Unreachable(f"{self.label}: could not start `{what}`: {e}") from e
            chan.settimeout(_POLL)  # so the stream threads notice `stop`
            stop = threading.Event()
            send_lock = threading.Lock()
            out: list[bytes] = []
            err: list[bytes] = []
            threads = [
                threading.Thread(target=_drain, args=(chan.recv, out, stop), daemon=True),
                threading.Thread(target=_drain, args=(chan.recv_stderr, err, stop), daemon=True),
            ]
            if stdin is not None:
                threads.append(threading.Thread(target=_feed, args=(chan, stdin, stop, send_lock), daemon=True))
            for t in threads:
                t.start()
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            finished = not any(t.is_alive() for t in threads) and chan.status_event.wait(
                max(0.0, deadline - time.monotonic())
            )
            if not finished:
                stop.set()
                # Close only between two of the writer's sends (see the docstring); it waits at most _POLL.
                locked = send_lock.acquire(timeout=4 * _POLL)
                try:
                    chan.close()
                finally:
                    if locked:
                        send_lock.release()
                if not conn.alive():
                    self._pool._evict(self._key, conn)
                    raise errors.Unreachable(f"{self.label}: the connection was lost while running `{what}`")
                raise errors.Unreachable(
                    f"{self.label}: `{what}` did not finish within {timeout:g}s",
                    hint="the host may be overloaded, or the command is stuck",
                )
            code = chan.recv_exit_status()
            if code == -1 and not conn.alive():
                self._pool._evict(self._key, conn)
                raise errors.Unreachable(f"{self.label}: the connection was lost while running `{what}`")
            return RunResult(code, b"".join(out), b"".join(err))

    def put(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        deadline = time.monotonic() + self._pool.options.io_timeout
        replaced_stale = False
        delay = 0.005
        refused_subsystem = 0
        while True:
            conn, reused = self._connection()
            opening = True
            try:
                with conn.sftp_lock:
                    sftp = conn.sftp or self._open_sftp(conn)
                    opening = False
                    try:
                        with sftp.open(path, "wb") as f:
                            f.set_pipelined(True)
                            f.write(data)
                        sftp.chmod(path, mode)
                    except BaseException as e:
                        if not isinstance(e, OSError) or e.errno is None:
                            # The SFTP session's state is unknown after an error mid-request: use a new one.
                            conn.sftp = None
                            with contextlib.suppress(Exception):
                                sftp.close()
                        raise
                return
            except (paramiko.SSHException, OSError, EOFError) as e:
                if isinstance(e, OSError) and e.errno is not None and not opening:
                    raise self._put_error(path, e) from e
                if not conn.alive():
                    self._pool._evict(self._key, conn)
                    if reused and not replaced_stale:
                        replaced_stale = True
                        continue  # a stale pooled connection: writing the whole file again is harmless
                    raise errors.Unreachable(f"{self.label}: lost the connection while writing {path}") from e
                if opening and str(e) == "Channel closed.":
                    # the session opened but sshd closed it at the subsystem request: no SFTP subsystem (a
                    # MaxSessions refusal fails at the open instead); a few tries rule out a passing hiccup
                    refused_subsystem += 1
                    if refused_subsystem >= _SUBSYSTEM_TRIES:
                        raise errors.Stalled(
                            f"{self.label}: the host's sshd refused the SFTP subsystem, needed to write {path}",
                            hint="add `Subsystem sftp internal-sftp` to the host's sshd_config and reload sshd "
                                 "(static installs write files over SFTP; `zato-gitops docs hosts`)",
                        ) from e
                if opening and time.monotonic() + delay < deadline:
                    time.sleep(delay)  # the SFTP session was refused on a live connection; see _channel
                    delay = min(delay * 2, 0.2)
                    continue
                if isinstance(e, TimeoutError) or opening:
                    raise errors.Unreachable(
                        f"{self.label}: writing {path} failed: {e or type(e).__name__}",
                        hint="files are written over SFTP: if the host's sshd has no SFTP subsystem, add "
                             "`Subsystem sftp internal-sftp` to its sshd_config and reload sshd "
                             "(`zato-gitops docs hosts`)" if opening else "",
                    ) from e
                raise errors.Stalled(f"{self.label}: cannot write {path}: {e or type(e).__name__}") from e

    def _open_sftp(self, conn: _Conn) -> paramiko.SFTPClient:
        sftp = conn.client.open_sftp()
        channel = sftp.get_channel()
        assert channel is not None
        channel.settimeout(self._pool.options.io_timeout)
        conn.sftp = sftp
        return sftp

    def _put_error(self, path: str, e: OSError) -> errors.ReconcilerError:
        reason = e.strerror or str(e)
        if e.errno == errno.ENOENT:
            hint = "the folder must exist; the reconciler creates it before writing"
        elif e.errno in (errno.EACCES, errno.EPERM):
            hint = f"the SSH user {self._key[2]!r} must be allowed to write there"
        else:
            hint = ""
        return errors.Stalled(f"{self.label}: cannot write {path}: {reason}", hint=hint)

    def close(self) -> None:
        """Nothing to do: the pool owns the shared connection."""

    # -- diagnostics -----------------------------------------------------------------------------------------

    def peer_socket(self) -> socket.socket:
        """The TCP socket of the shared connection (connecting if needed); for diagnostics and tests."""
        return self._connection()[0].sock

    # -- internals -------------------------------------------------------------------------------------------

    def _connection(self) -> tuple[_Conn, bool]:
        return self._pool._get(self.label, self._key)

    @contextlib.contextmanager
    def _channel(
        self, deadline: float, what: str, timeout: float
    ) -> Iterator[tuple[_Conn, paramiko.Channel]]:
        """A session channel on the shared connection, within the connection's MaxSessions.

        Opening is retried, which is safe because nothing has run yet: a stale pooled connection is replaced
        once, and an open refused on a live connection is retried with backoff until the deadline, because
        sshd frees a closed session's slot lazily and may refuse the next open for a moment even under our
        session limit."""
        replaced_stale = False
        delay = 0.005
        while True:
            conn, reused = self._connection()
            if not conn.sessions.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise errors.Unreachable(
                    f"{self.label}: no free SSH session for `{what}` within {timeout:g}s",
                    hint="too many commands at once on one host; raise MaxSessions in its sshd_config",
                )
            try:
                try:
                    chan = conn.transport.open_session(timeout=max(0.1, deadline - time.monotonic()))
                except (paramiko.SSHException, OSError, EOFError) as e:
                    if not conn.alive():
                        self._pool._evict(self._key, conn)
                        if reused and not replaced_stale:
                            replaced_stale = True
                            continue  # a pooled connection that died while idle: try a fresh one
                        raise errors.Unreachable(f"{self.label}: the SSH connection was lost: {e}") from e
                    # Refused on a live connection (a ChannelException, or paramiko's bare "Unable to open
                    # channel" when concurrent opens race for its saved exception): retry until the deadline.
                    if time.monotonic() + delay < deadline:
                        time.sleep(delay)
                        delay = min(delay * 2, 0.2)
                        continue
                    raise errors.Unreachable(
                        f"{self.label}: the host refused an SSH session for `{what}`: {e or type(e).__name__}",
                        hint="too many sessions on one connection? check MaxSessions in its sshd_config",
                    ) from e
                try:
                    yield conn, chan
                finally:
                    chan.close()
                return
            finally:
                conn.sessions.release()


def _drain(recv: Callable[[int], bytes], sink: list[bytes], stop: threading.Event) -> None:
    """Read one stream of a channel to its end (in its own thread, so stdout and stderr never block each
    other)."""
    while True:
        try:
            data = recv(_CHUNK)
        except TimeoutError:
            if stop.is_set():
                return
            continue
        except (OSError, paramiko.SSHException, EOFError):
            return
        if not data:
            return
        sink.append(data)


def _feed(chan: paramiko.Channel, data: bytes, stop: threading.Event, send_lock: threading.Lock) -> None:
    """Write stdin then EOF, one packet at a time under send_lock, so `run` can close the channel between
    two sends on a timeout. A remote command that exits without reading its input is not an error."""
    view = memoryview(data)
    try:
        while view:
            if stop.is_set():
                return
            with send_lock:
                try:
                    sent = chan.send(bytes(view[:_CHUNK]))
                except TimeoutError:
                    continue  # no window yet; look at `stop` again
            if sent == 0:
                return
            view = view[sent:]
        with send_lock:
            if not stop.is_set():
                chan.shutdown_write()
    except (OSError, paramiko.SSHException, EOFError):
        return
