"""The services repository, read at one commit from the reconciler's own clone.

The reconciler never works in a checkout: it keeps a bare clone at `<state_dir>/repo.git`, fetches one
branch into `refs/remotes/origin/<branch>` and reads blobs straight from the object database at an exact
commit. Nothing is checked out, so there is no working tree to get dirty, and a plan made at commit X reads
exactly X even while a newer commit is being fetched. The origin's deploy notes are fetched alongside (into
`refs/notes/zato-gitops-origin`) so `notes.py` can merge them before it writes its own. This package
(`gitrepo/`) is the only one that import `git`.

Errors follow `errors.py`: a branch that does not exist, or a commit or path that is not there, needs a
person (`Stalled`); a remote that cannot be reached or refuses our credentials may recover on its own
(`SourceError`). Every git command runs with `GIT_TERMINAL_PROMPT=0` (an https remote without credentials
fails at once instead of waiting on a prompt nobody sees), the C locale (so git's messages can be
recognised) and a timeout; every URL in a message or a log line goes through `redact`, because remote URLs
are where tokens end up.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

import git
from git.objects import Commit

from reconciler.errors import HostKeyError, SourceError, Stalled

log = logging.getLogger(__name__)

#: where this reconciler keeps its deploy notes, and where it keeps the origin's copy of them
NOTES_REF = "refs/notes/zato-gitops"
ORIGIN_NOTES_REF = "refs/notes/zato-gitops-origin"

DEFAULT_TIMEOUT = 300.0

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")
#: schemes where a bare user name is usually a token (`https://TOKEN@github.com/...`)
_TOKEN_SCHEMES = {"http://", "https://", "ftp://", "ftps://"}


def redact(url: str) -> str:
    """`url` (or any text holding URLs, such as git's stderr) with credentials replaced by `***`.

    `https://user:tok@host/x` -> `https://***@host/x`, and `https://tok@host/x` -> `https://***@host/x`. A
    plain user name in an SSH URL (`ssh://git@host/x`, `git@host:x`) is not a secret and is kept; a password
    is not."""

    def sub(m: re.Match[str]) -> str:
        scheme, userinfo = m.group("scheme"), m.group("userinfo")
        if ":" in userinfo or scheme.lower() in _TOKEN_SCHEMES:
            return f"{scheme}***@"
        return m.group(0)

    return _URL_USERINFO.sub(sub, url)


def _is_local_path(url: str) -> bool:
    """Git's own rule: a URL has `://`; `[user@]host:path` (a colon before any slash) is scp-like; the rest
    are paths on this machine."""
    if "://" in url:
        return False
    colon, slash = url.find(":"), url.find("/")
    return colon < 0 or (0 <= slash < colon)


def normalise_url(url: str) -> str:
    """A local path made absolute (git resolves a relative remote against the clone, not against our cwd);
    URLs unchanged."""
    return str(Path(url).expanduser().resolve()) if _is_local_path(url) else url


@dataclass(frozen=True)
class Tree:
    """One commit's tree as `git ls-tree -r` lists it: regular files and symlinks by path, each with its blob id.
    Submodules (mode 160000) are neither."""

    commit: str
    files: Mapping[str, str]
    symlinks: Mapping[str, str]


#: trees kept in memory: the branch head, the commit before it, and a few more for history and diffs
_TREES_KEPT = 4
_SYMLINK = "120000"


def parse_ls_tree(commit: str, out: str) -> Tree:
    """`git ls-tree -r -z` output (`MODE SP TYPE SP OID TAB PATH NUL`...) -> Tree, in one linear pass."""
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    for record in out.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        mode, kind, oid = [*meta.split(" "), "", ""][:3]
        if kind != "blob":
            continue  # a submodule's commit
        (links if mode == _SYMLINK else files)[path] = oid
    return Tree(commit, files, links)


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    short: str
    author: str  # "Name <email>"
    date: str  # author date, ISO-8601 with the author's offset
    summary: str  # first line of the message


#: lines git adds to every remote failure, which only hide the one that says what went wrong
_BOILERPLATE = ("Please make sure you have the correct access rights", "and the repository exists.")


@dataclass(frozen=True)
class GitResult:
    """One git command's exit status and output (stdout and stderr with the trailing newline stripped)."""

    status: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.status == 0

    def message(self) -> str:
        """The useful part of stderr (or stdout) for an error message, redacted."""
        text = self.err.strip() or self.out.strip() or f"git exited with status {self.status}"
        lines = [
            line for line in (raw.strip() for raw in text.splitlines())
            if line and not line.startswith("hint:") and not line.startswith(_BOILERPLATE)
        ]
        return redact("; ".join(lines[:4]) if lines else text)


class Source:
    """The services repository at `url`, branch `branch`, cloned bare at `<state_dir>/repo.git` on first use.

    Safe to share between threads: every git call holds `lock` (an `RLock`, which `Audit` takes too), since
    GitPython's object reader is a single persistent `git cat-file` process."""

    def __init__(
        self,
        url: str,
        branch: str = "main",
        state_dir: Path | str | None = None,
        *,
        ssh_command: str | None = None,
        committer_name: str | None = None,
        committer_email: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if state_dir is None:
            raise TypeError("Source() needs a state_dir")
        self.url = normalise_url(url)
        self.branch = branch
        self.state_dir = Path(state_dir).expanduser().absolute()
        self.ssh_command = ssh_command
        self.committer_name = committer_name
        self.committer_email = committer_email
        self.timeout = timeout
        self.lock = threading.RLock()
        self._repo: git.Repo | None = None
        self._trees: OrderedDict[str, Tree] = OrderedDict()

    # -- the clone -------------------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.state_dir / "repo.git"

    @property
    def safe_url(self) -> str:
        return redact(self.url)

    @property
    def tracking_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    @property
    def repo(self) -> git.Repo:
        """The bare clone, created (or re-pointed at a changed URL) on first use."""
        with self.lock:
            if self._repo is None:
                self._repo = self._open()
            return self._repo

    def _open(self) -> git.Repo:
        path = self.path
        try:
            if (path / "HEAD").exists():
                repo = git.Repo(path)
            else:
                path.mkdir(parents=True, exist_ok=True)
                repo = git.Repo.init(path, bare=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as e:
            raise Stalled(
                f"{path} is not a git repository",
                hint="remove it and the reconciler clones the repository again",
            ) from e
        except (OSError, git.GitCommandError) as e:
            raise Stalled(f"cannot create the clone at {path}: {e}",
                          hint="the state dir (--state-dir) must be writable by the user running zato-gitops") from e
        env = {
            "GIT_DIR": str(path),
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
            "LANGUAGE": "C",
        }
        if self.ssh_command:
            env["GIT_SSH_COMMAND"] = self.ssh_command
        repo.git.update_environment(**env)
        self._repo = repo
        try:
            self._configure()
        except BaseException:
            repo.close()
            self._repo = None
            raise
        return repo

    def _local_config(self) -> dict[str, str]:
        """The clone's own config (remote URL, committer), read from its file: no `git config` process per key."""
        assert self._repo is not None
        reader = self._repo.config_reader("repository")
        found: dict[str, str] = {}
        for section, option, key in (('remote "origin"', "url", "remote.origin.url"), ("user", "name", "user.name"),
                                     ("user", "email", "user.email")):
            if reader.has_option(section, option):
                found[key] = str(reader.get_value(section, option))
        return found

    def _configure(self) -> None:
        config = self._local_config()
        current = config.get("remote.origin.url")
        if current is None:
            self._check(self.git("remote", "add", "origin", self.url), "cannot add the remote")
        elif current != self.url:
            log.info("the repository URL changed from %s to %s; re-pointing the clone", redact(current),
                     self.safe_url)
            self._check(self.git("remote", "set-url", "origin", self.url), "cannot re-point the remote")
            # what was fetched from the old URL says nothing about the new one; our own notes stay
            for ref in self.git("for-each-ref", "--format=%(refname)", "refs/remotes/origin/").out.split():
                self.git("update-ref", "-d", ref)
            self.git("update-ref", "-d", ORIGIN_NOTES_REF)
        for key, given, default in (
            ("user.name", self.committer_name, "zato-gitops"),
            ("user.email", self.committer_email, f"zato-gitops@{socket.gethostname()}"),
        ):
            if given is not None and config.get(key) != given:
                self._check(self.git("config", "--local", key, given), f"cannot set {key}")
            elif given is None and key not in config:
                self._check(self.git("config", "--local", key, default), f"cannot set {key}")

    def _check(self, result: GitResult, what: str) -> GitResult:
        if not result.ok:
            raise SourceError(f"{what} in {self.path}: {result.message()}")
        return result

    def git(self, *args: str, stdin: BinaryIO | None = None) -> GitResult:
        """Run `git <args>` in the clone and return its status and output; never raises for a non-zero exit.
        For `notes.py`; everyone else reads through the methods below."""
        with self.lock:
            repo = self._repo if self._repo is not None else self.repo
            result = repo.git.execute(
                [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args],
                istream=stdin,
                with_extended_output=True,
                with_exceptions=False,
                kill_after_timeout=self.timeout,
            )
        status, out, err = cast("tuple[int | None, str | bytes, str | bytes]", result)
        return GitResult(int(status or 0), _text(out), _text(err))

    def close(self) -> None:
        """Stop GitPython's persistent reader processes; the next call reopens the clone."""
        with self.lock:
            if self._repo is not None:
                self._repo.close()
                self._repo = None

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the remote ------------------------------------------------------------------------------------------

    def fetch(self) -> str:
        """Fetch the branch and the origin's deploy notes; return the branch head's sha.

        The notes are fetched with a pattern refspec so a remote without notes yet is not an error."""
        with self.lock:
            result = self.git(
                "fetch", "--no-tags", "origin",
                f"+refs/heads/{self.branch}:{self.tracking_ref}",
                f"+{NOTES_REF}*:{ORIGIN_NOTES_REF}*",
            )
            if not result.ok:
                if "couldn't find remote ref" in result.err:
                    raise Stalled(
                        f"the branch {self.branch!r} does not exist in {self.safe_url}",
                        hint="push the branch, or point the reconciler at an existing one",
                    )
                self._raise_for_host_key(result)
                raise SourceError(f"cannot fetch {self.branch!r} from {self.safe_url}: {result.message()}")
            head = self.git("rev-parse", "--verify", f"{self.tracking_ref}^{{commit}}")
            return self._check(head, "cannot resolve the fetched branch").out.strip()

    def _raise_for_host_key(self, result: GitResult) -> None:
        """An unknown or changed SSH host key of the git server needs a person, not a retry."""
        if "Host key verification failed" in result.err or "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.err:
            raise HostKeyError(
                f"cannot fetch from {self.safe_url}: Host key verification failed (the git server's SSH host key "
                "is not in the known_hosts file, or it changed); it is never accepted automatically",
                hint="verify the server's fingerprint, then add its key to the file given with --known-hosts, "
                "e.g. `ssh-keyscan -p PORT HOST >> KNOWN_HOSTS` and compare `ssh-keygen -lf KNOWN_HOSTS`",
            )

    def remote_head(self) -> str | None:
        """The branch head on the remote via `git ls-remote` (nothing fetched); None when it is absent."""
        ref = f"refs/heads/{self.branch}"
        result = self.git("ls-remote", "origin", ref)
        if not result.ok:
            self._raise_for_host_key(result)
            raise SourceError(f"cannot list the branches of {self.safe_url}: {result.message()}")
        for line in result.out.splitlines():
            sha, _, name = line.partition("\t")
            if name.strip() == ref:
                return sha.strip()
        return None

    # -- reading one commit ----------------------------------------------------------------------------------

    def _commit(self, commit: str) -> Commit:
        try:
            c = self.repo.commit(commit)
            _ = c.tree  # a full sha resolves lazily: reading the commit shows whether it is there
            return c
        except (ValueError, git.BadName, git.BadObject) as e:
            raise Stalled(
                f"commit {commit} is not in the clone of {self.safe_url}",
                hint="fetch first, or check that the commit is on the branch",
            ) from e

    def tree(self, commit: str) -> Tree:
        """The commit's whole tree, read once (`git ls-tree -r -z`) and kept for the last few commits, so
        building the desired state costs one git call however many files it looks at."""
        with self.lock:
            cached = self._trees.get(commit)  # a full sha, as the engine passes it: no git call at all
            if cached is None:
                c = self._commit(commit)
                cached = self._trees.get(str(c.hexsha))
            if cached is not None:
                self._trees.move_to_end(cached.commit)
                return cached
            sha = str(c.hexsha)
            listing = self.git("ls-tree", "-r", "-z", "--full-tree", sha)
            self._check(listing, f"cannot list the files of commit {sha[:12]}")
            tree = parse_ls_tree(sha, listing.out)
            self._trees[sha] = tree
            while len(self._trees) > _TREES_KEPT:
                self._trees.popitem(last=False)
            return tree

    def _entry(self, commit: str, path: str) -> str:
        """The blob id of a file or symlink at `path`; Stalled when there is none."""
        tree = self.tree(commit)
        key = path.strip("/")
        oid = tree.files.get(key) or tree.symlinks.get(key)
        if oid is None:
            raise Stalled(f"{path} is not in commit {tree.commit[:12]}")
        return oid

    def files(self, commit: str) -> list[str]:
        """Every regular file path in the commit's tree, sorted; submodules and symlinks are not files."""
        return sorted(self.tree(commit).files)

    def symlinks(self, commit: str) -> list[str]:
        """Every symlink in the commit's tree (to a file or a directory: git stores both as mode 120000)."""
        return sorted(self.tree(commit).symlinks)

    def read(self, commit: str, path: str) -> bytes:
        """The bytes of a file (or a symlink's target text) through GitPython's persistent `cat-file --batch`."""
        oid = self._entry(commit, path)
        with self.lock:
            data: bytes = self.repo.odb.stream(bytes.fromhex(oid)).read()
            return data

    def blob_id(self, commit: str, path: str) -> str:
        return self._entry(commit, path)

    def exists(self, commit: str, path: str) -> bool:
        """Whether `path` is a file in the commit (a missing commit is still an error)."""
        return path.strip("/") in self.tree(commit).files

    def commit_info(self, commit: str) -> CommitInfo:
        with self.lock:
            c = self._commit(commit)
            short = self.git("rev-parse", "--short", c.hexsha)
            return CommitInfo(
                sha=c.hexsha,
                short=short.out.strip() if short.ok else c.hexsha[:7],
                author=f"{c.author.name} <{c.author.email}>",
                date=c.authored_datetime.isoformat(),
                summary=_text(c.summary),
            )

    def summary(self, commit: str) -> str | None:
        """A commit's first message line, or None when the commit is not in the clone (notes may name commits
        from other branches)."""
        with self.lock:
            try:
                return _text(self._commit(commit).summary)
            except Stalled:
                return None

    def ref_sha(self, ref: str) -> str | None:
        """What `ref` points at in the clone, or None when it does not exist."""
        result = self.git("rev-parse", "--verify", "--quiet", ref)
        return result.out.strip() if result.ok and result.out.strip() else None


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
