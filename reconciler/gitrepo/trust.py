"""What the reconciler trusts in git, and the git it writes for a rollback: signatures, ancestry, any ref.

Anyone who can push to the branch can otherwise release code onto every server. So, when the reconciler's own
config asks for it (never the services repository, which the signer controls), a head commit must carry a
signature by an allowed key, checked by git itself (`git verify-commit` with `gpg.ssh.allowedSignersFile`, or
gpg with a keyring the operator gives), and must descend from the last commit this reconciler applied: a
force-push that rewrites history is refused unless `allow_history_rewrite` says otherwise (comin's rule).

Kept apart from `source.py` (which reads the branch and trees) so both can change without stepping on each
other; everything here runs through `Source.git`, so it shares the clone, its lock, environment and timeouts.

Also here: fetching an arbitrary ref (`refs/pull/N/head`, a SHA) for `plan --ref`, and the rollback commit, a
new commit on the branch whose tree is an older commit's tree, pushed with a lease so a branch that moved
meanwhile is refused instead of overwritten.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reconciler.errors import SourceError, Stalled
from reconciler.gitrepo.source import Source

Mode = Literal["off", "ssh", "gpg"]

#: where fetched refs other than the branch are kept in the clone, and the last applied commit per branch
FETCHED_PREFIX = "refs/zato-gitops/fetched/"
APPLIED_PREFIX = "refs/zato-gitops/applied/"

_SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")


class Untrusted(Stalled):
    """The head commit is not signed by an allowed key, or rewrites history: refused before anything is observed.

    `commit` is the refused commit, so the caller can record the refusal on it."""

    def __init__(self, commit: str, message: str, *, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.commit = commit


@dataclass(frozen=True)
class Signature:
    """What git says about a commit's signature: `%G?` status, signer (principal or uid) and key."""

    status: str  # G good, U good but unknown validity, N none, E cannot be checked, B bad, X/Y expired, R revoked
    signer: str
    key: str

    def describe(self) -> str:
        if self.status == "N":
            return "unsigned"
        who = self.signer or "an unknown signer"
        return f"signed by {who}" + (f" (key {self.key})" if self.key else "")


# --- fetching any ref --------------------------------------------------------------------------------------------

def fetch_ref(source: Source, ref: str) -> str:
    """Fetch `ref` from the origin and return the commit it names.

    `ref` is a branch name, a full ref (`refs/pull/7/head`, `refs/merge-requests/7/head`, `refs/heads/x`) or a
    commit SHA. A SHA is fetched directly when the origin allows it, and otherwise looked up among the commits
    already fetched with the branch."""
    with source.lock:
        source.repo  # noqa: B018  (opens or creates the clone)
        if _SHA.match(ref) and not ref.startswith("refs/"):
            direct = source.git("fetch", "--no-tags", "origin", ref)
            if not direct.ok:
                source.fetch()
            found = source.ref_sha(f"{ref}^{{commit}}")
            if found is None:
                raise Stalled(f"commit {ref} is not in {source.safe_url}",
                              hint="push it, or give a branch or refs/pull/N/head instead")
            return found
        full = ref if ref.startswith("refs/") else f"refs/heads/{ref}"
        local = FETCHED_PREFIX + full[len("refs/"):]
        result = source.git("fetch", "--no-tags", "origin", f"+{full}:{local}")
        if not result.ok:
            if "couldn't find remote ref" in result.err:
                raise Stalled(f"{ref} does not exist in {source.safe_url}",
                              hint="check the pull request number, or give a branch or a commit SHA")
            raise SourceError(f"cannot fetch {ref} from {source.safe_url}: {result.message()}")
        sha = source.ref_sha(f"{local}^{{commit}}")
        if sha is None:
            raise Stalled(f"{ref} in {source.safe_url} does not name a commit")
        return sha


# --- signatures --------------------------------------------------------------------------------------------------

def signature(source: Source, commit: str, mode: Mode, allowed: Path | None) -> tuple[bool, Signature]:
    """Whether git verifies `commit`'s signature with the allowed keys, and what it says about the signer."""
    config, env = _verify_config(source, mode, allowed)
    with source.lock:
        old = source.repo.git.update_environment(**env)
        try:
            verify = source.git(*config, "verify-commit", commit)
            info = source.git(*config, "log", "-1", "--format=%G?%n%GS%n%GK", commit)
        finally:
            source.repo.git.update_environment(**old)
    status, signer, key = ([*info.out.splitlines(), "", "", ""])[:3] if info.ok else ("N", "", "")
    sig = Signature(status.strip() or "N", signer.strip(), key.strip())
    # ssh: `U` is a good signature by a key no allowed signer has; gpg: every key of our own keyring is allowed
    return verify.ok and sig.status in (("G",) if mode == "ssh" else ("G", "U")), sig


def _verify_config(source: Source, mode: Mode, allowed: Path | None) -> tuple[list[str], dict[str, str]]:
    if allowed is None or not allowed.is_file():
        raise Stalled(f"verify.allowed_signers {allowed} is not a readable file",
                      hint="point verify.allowed_signers in the reconciler's config at the allowed signers file")
    if mode == "ssh":
        return ["-c", f"gpg.ssh.allowedSignersFile={allowed}"], {}
    # gpg: a keyring of its own, imported into a home in the state dir, so the user's keys never count
    home = source.state_dir / "gnupg"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = home / "imported"
    current = f"{allowed}:{allowed.stat().st_mtime_ns}:{allowed.stat().st_size}"
    if not stamp.exists() or stamp.read_text() != current:
        for old in home.glob("pubring*"):
            old.unlink()
        run = subprocess.run(["gpg", "--batch", "--homedir", str(home), "--import", str(allowed)],
                             capture_output=True, text=True, timeout=60, check=False)
        if run.returncode != 0:
            raise Stalled(f"cannot import the keyring {allowed}: {run.stderr.strip()[:300]}")
        # every key of the operator's keyring is trusted to sign: that is what listing it means
        trust = subprocess.run(["gpg", "--batch", "--homedir", str(home), "--with-colons", "--fingerprint"],
                               capture_output=True, text=True, timeout=60, check=False)
        owner = "".join(f"{line.split(':')[9]}:6:\n" for line in trust.stdout.splitlines()
                        if line.startswith("fpr:"))
        subprocess.run(["gpg", "--batch", "--homedir", str(home), "--import-ownertrust"], input=owner,
                       capture_output=True, text=True, timeout=60, check=False)
        stamp.write_text(current)
    return [], {"GNUPGHOME": str(home)}


def check_signed(source: Source, commit: str, mode: Mode, allowed: Path | None) -> Signature:
    """Raise `Untrusted` unless `commit` is signed by an allowed key; return the signature."""
    ok, sig = signature(source, commit, mode, allowed)
    if ok:
        return sig
    short = commit[:12]
    if sig.status == "N":
        msg = f"commit {short} is unsigned; only commits signed by an allowed key are applied"
    else:
        msg = (f"commit {short} is {sig.describe()}, which is not an allowed signer in {allowed}; only commits "
               "signed by an allowed key are applied")
    raise Untrusted(commit, msg, hint=f"sign the commit with an allowed key ({mode}), or add the signer's key to "
                                      f"{allowed} if it should be trusted")


# --- ancestry ----------------------------------------------------------------------------------------------------

def applied_ref(branch: str) -> str:
    return APPLIED_PREFIX + branch


def last_applied(source: Source, branch: str) -> str | None:
    return source.ref_sha(applied_ref(branch))


def mark_applied(source: Source, branch: str, commit: str) -> None:
    """Remember `commit` as the last applied one; a commit older than the one remembered (a drift heal of an
    earlier revision) leaves it where it is, so the history check never loosens."""
    last = last_applied(source, branch)
    if last == commit or (last is not None and is_ancestor(source, commit, last)):
        return
    result = source.git("update-ref", applied_ref(branch), commit)
    if not result.ok:
        raise SourceError(f"cannot record {commit[:12]} as applied in {source.path}: {result.message()}")


def is_ancestor(source: Source, old: str, new: str) -> bool:
    """Whether `old` is `new` or one of its ancestors (False when `old` is no longer in the clone)."""
    return source.git("merge-base", "--is-ancestor", old, new).status == 0


def check_descends(source: Source, branch: str, commit: str) -> None:
    """Raise `Untrusted` when `commit` does not descend from the last commit applied from `branch`."""
    last = last_applied(source, branch)
    if last is None or is_ancestor(source, last, commit):
        return
    raise Untrusted(
        commit,
        f"commit {commit[:12]} is not a descendant of {last[:12]}, the last commit applied from {branch!r}: the "
        "branch history was rewritten (a force-push), and that is refused",
        hint="push a new commit on top of the applied one (`zato-gitops rollback --to COMMIT` makes one), or set "
             "verify.allow_history_rewrite: true in the reconciler's config",
    )


# --- rollback ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RollbackCommit:
    commit: str
    parent: str
    to: str
    message: str


def rollback_message(to: str, head: str, by: str, text: str | None) -> str:
    first = text.strip().splitlines()[0] if text and text.strip() else f"Roll back to {to[:12]}"
    return (f"{first}\n\nRollback: the tree of {to} (was {head}), made by zato-gitops rollback, run by {by}.\n\n"
            f"Zato-Gitops-Rollback-To: {to}\nZato-Gitops-Rollback-From: {head}\nZato-Gitops-Rollback-By: {by}\n")


def rollback_target(message: str) -> str | None:
    """The commit a rollback commit rolled back to, from its trailer; None for any other commit."""
    m = re.search(r"^Zato-Gitops-Rollback-To: ([0-9a-f]{40})$", message, re.MULTILINE)
    return m.group(1) if m else None


def make_rollback(
    source: Source, branch: str, to: str, by: str, text: str | None, *, sign_key: str | None = None,
    sign_format: str = "ssh",
) -> RollbackCommit:
    """Create a commit on top of the branch head whose tree is `to`'s, and push it with a lease on the head.

    The branch is fetched first; if someone pushed between that fetch and our push, the push is refused and so is
    the rollback (nothing was changed on the origin)."""
    head = source.fetch()
    target = source.ref_sha(f"{to}^{{commit}}")
    if target is None:
        raise Stalled(f"commit {to} is not on {source.safe_url}", hint="give a commit of the branch history")
    if not is_ancestor(source, target, head):
        raise Stalled(f"commit {target[:12]} is not in the history of {branch!r}",
                      hint="roll back to a commit the branch went through (see `zato-gitops history`)")
    tree = source.git("rev-parse", f"{target}^{{tree}}")
    if source.git("rev-parse", f"{head}^{{tree}}").out == tree.out:
        raise Stalled(f"the head of {branch!r} ({head[:12]}) already has the tree of {target[:12]}; nothing to roll "
                      "back")
    message = rollback_message(target, head, by, text)
    args = ["commit-tree", tree.out.strip(), "-p", head, "-F", "-"]
    config: list[str] = []
    if sign_key:
        fmt = "ssh" if sign_format == "ssh" else "openpgp"
        config = ["-c", f"gpg.format={fmt}", "-c", f"user.signingkey={sign_key}"]
        args.insert(1, "-S")
    with tempfile.TemporaryFile() as f:
        f.write(message.encode())
        f.seek(0)
        made = source.git(*config, *args, stdin=f)
    if not made.ok:
        raise Stalled(f"cannot create the rollback commit: {made.message()}")
    new = made.out.strip()
    pushed = source.git("push", "--porcelain", f"--force-with-lease=refs/heads/{branch}:{head}", "origin",
                        f"{new}:refs/heads/{branch}")
    if not pushed.ok:
        if "stale info" in pushed.err + pushed.out or "rejected" in pushed.err + pushed.out or "fetch first" in (
                pushed.err + pushed.out):
            raise Stalled(
                f"the branch {branch!r} moved while the rollback was made (it was at {head[:12]}); nothing was pushed",
                hint="look at what was pushed (`git log`), then run the rollback again if it is still wanted",
            )
        raise SourceError(f"cannot push the rollback commit to {source.safe_url}: {pushed.message()}")
    source.git("update-ref", source.tracking_ref, new)
    return RollbackCommit(new, head, target, message)
