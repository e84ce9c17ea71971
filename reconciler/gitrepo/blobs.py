"""Find in git the bytes of a module copy a server runs, knowing only its sha256.

The observe step hashes what each server runs; to say which services a server runs today (and so which services a
change adds, changes or removes) the plan needs those bytes. They are in git whenever zato-gitops deployed them:
every hot-deploy record names its blob and sha256, and the last applied commit and the branch head hold the usual
suspects. A copy found nowhere was put on the server by other means, and the plan says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import git

from reconciler.errors import Stalled
from reconciler.gitrepo.source import Source


def read_blob(source: Source, blob_id: str) -> bytes | None:
    with source.lock:
        try:
            data: bytes = source.repo.odb.stream(bytes.fromhex(blob_id)).read()
        except (ValueError, git.BadObject, git.BadName):
            return None
        return data


def by_sha256(source: Source, wanted: set[str], blob_ids: Iterable[str], commits: Iterable[str | None],
              suffix: str = ".py", known: Callable[[str], str | None] | None = None) -> dict[str, bytes]:
    """sha256 -> bytes for every wanted hash found among `blob_ids` (tried first) and the `suffix` files of
    `commits`. `known(blob id)` may tell a blob's sha256 without reading it (the fact cache)."""
    found: dict[str, bytes] = {}
    for blob in blob_ids:
        if not (wanted - found.keys()):
            return found
        data = read_blob(source, blob)
        if data is not None and (h := hashlib.sha256(data).hexdigest()) in wanted:
            found[h] = data
    for commit in commits:
        if commit is None or not (wanted - found.keys()):
            continue
        try:
            entries = source.tree(commit).files
        except Stalled:  # a commit no longer in the clone (garbage-collected after a force-push): nothing to find
            continue
        for path, blob in entries.items():
            if not path.endswith(suffix):
                continue
            cached = known(blob) if known else None
            if cached is not None and cached not in wanted:
                continue
            data = read_blob(source, blob)
            if data is not None and (h := hashlib.sha256(data).hexdigest()) in wanted:
                found[h] = data
    return found
