"""Install static files on a server as one transaction that can be rolled back.

A restart that fails must leave the server running what it ran before, so the files written just before it are
kept: every file about to be replaced or removed is first copied into the transaction's `old/` folder (or an
`.absent` marker when it did not exist). Then the new bytes, uploaded into `new/` and verified by sha256 on the
server, are installed with a copy and a rename next to the target (these folders are not watched by Zato, and a
rename means a reader never sees half a file). Rolling back replays `old/`. Both scripts are idempotent, so a
reconciler killed mid-way can run them again: a backup is taken only once per transaction.

Layout on the server: `<work_dir>/zato-gitops/txn/<id>/{ops,sums,new/N,old/N}`, where `ops` lists `N<TAB>path`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.errors import ReconcilerError
from reconciler.transport import Transport, script_argv

APPLY_SCRIPT = r"""
t=$1
cd "$t" || { echo "no transaction dir $t"; exit 2; }
if [ -s sums ]; then sha256sum -c --quiet sums || { echo "uploaded files do not match their sha256"; exit 3; }; fi
tab=$(printf '\t')
while IFS="$tab" read -r n dst; do
  [ -n "$n" ] || continue
  if [ ! -e "old/$n" ] && [ ! -e "old/$n.absent" ]; then
    if [ -e "$dst" ]; then cp -p -- "$dst" "old/$n" || exit 4; else : > "old/$n.absent"; fi
  fi
  if [ -e "new/$n" ]; then
    mkdir -p -- "$(dirname -- "$dst")" && cp -- "new/$n" "$dst.zg-tmp" && mv -f -- "$dst.zg-tmp" "$dst" || exit 5
  else
    rm -f -- "$dst" || exit 5
  fi
done < ops
echo applied
"""

ROLLBACK_SCRIPT = r"""
t=$1
cd "$t" || { echo "no transaction dir $t"; exit 2; }
tab=$(printf '\t')
while IFS="$tab" read -r n dst; do
  [ -n "$n" ] || continue
  if [ -e "old/$n" ]; then
    cp -p -- "old/$n" "$dst.zg-tmp" && mv -f -- "$dst.zg-tmp" "$dst" || exit 5
  elif [ -e "old/$n.absent" ]; then
    rm -f -- "$dst"
  fi
done < ops
echo rolled-back
"""


@dataclass(frozen=True)
class FileOp:
    path: str  # absolute destination on the server
    data: bytes | None  # None: remove
    sha256: str | None = None


def txn_dir(work_dir: str, txn_id: str) -> str:
    return posixpath.join(work_dir, "zato-gitops", "txn", txn_id)


def _check_path(path: str) -> None:
    if not path.startswith("/") or "\t" in path or "\n" in path:
        raise ReconcilerError(f"refusing to write {path!r}: not an absolute path without tabs or line breaks")


def stage(transport: Transport, tdir: str, ops: Sequence[FileOp]) -> None:
    """Upload the new files and the op list into the transaction dir (only if it was not staged before)."""
    for op in ops:
        _check_path(op.path)
    mk = transport.run(["mkdir", "-p", "--", f"{tdir}/new", f"{tdir}/old"])
    if not mk.ok:
        raise ReconcilerError(f"{transport.label}: cannot create {tdir}: {mk.err_text()}")
    lines, sums = [], []
    for i, op in enumerate(ops):
        lines.append(f"{i}\t{op.path}\n")
        if op.data is not None:
            transport.put(f"{tdir}/new/{i}", op.data)
            if op.sha256:
                sums.append(f"{op.sha256}  new/{i}\n")
    transport.put(f"{tdir}/sums", "".join(sums).encode())
    transport.put(f"{tdir}/ops", "".join(lines).encode())


def apply(transport: Transport, tdir: str) -> None:
    r = transport.run(script_argv(APPLY_SCRIPT, tdir))
    if not r.ok:
        raise ReconcilerError(f"{transport.label}: installing files failed: {(r.text() + r.err_text()).strip()}")


def rollback(transport: Transport, tdir: str) -> None:
    r = transport.run(script_argv(ROLLBACK_SCRIPT, tdir))
    if not r.ok:
        raise ReconcilerError(f"{transport.label}: putting the previous files back failed: "
                              f"{(r.text() + r.err_text()).strip()}")


def staged(transport: Transport, tdir: str) -> bool:
    return transport.run(["test", "-f", f"{tdir}/ops"]).ok
