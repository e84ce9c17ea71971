"""Follow a server's logs/server.log from an offset, in one round trip per read, surviving a rotation.

Zato's log rotates (RotatingFileHandler: server.log -> server.log.1). The read script is given the offset and the
inode seen at observe time; when the inode changed or the file shrank, it sends the rest of server.log.1 (if that
is the old file) and then the new server.log from its start. Only whole lines are consumed, so a line being
written while we read is read whole next time. Lines come out clean (`clean_line`): Zato 3.2 wraps log levels in
ANSI colour codes, and nothing read here may carry an escape character to a person, a JSON report or a git note.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.core.state import LogMark
from reconciler.errors import Unreachable
from reconciler.transport import Transport, script_argv
from reconciler.zato.logscan import clean_line

READ_SCRIPT = r"""
f=$1; off=$2; ino=$3
st=$(stat -c '%i %s' -- "$f" 2>/dev/null) || st="0 0"
cur_ino=${st% *}; cur_size=${st#* }
echo "@@stat $cur_ino $cur_size"
if [ "$cur_ino" != "$ino" ] || [ "$cur_size" -lt "$off" ]; then
  if [ -f "$f.1" ] && [ "$(stat -c %i -- "$f.1")" = "$ino" ]; then
    echo "@@old"; tail -c "+$((off + 1))" -- "$f.1"; echo; echo "@@end-old"
  fi
  echo "@@rotated"; cat -- "$f" 2>/dev/null
else
  echo "@@new"; tail -c "+$((off + 1))" -- "$f"
fi
"""


@dataclass(frozen=True)
class LogChunk:
    lines: list[str]
    mark: LogMark  # where to read from next time


def _whole_lines(data: bytes) -> tuple[list[str], int]:
    end = data.rfind(b"\n") + 1
    text = data[:end].decode("utf-8", "replace")
    return _clean(text.split("\n")), end


def _clean(lines: list[str]) -> list[str]:
    return [c for c in (clean_line(line) for line in lines) if c]


def parse_read(output: bytes, mark: LogMark) -> LogChunk:
    head, sep, rest = output.partition(b"\n")
    parts = head.decode().split()
    if not sep or len(parts) != 3 or parts[0] != "@@stat":
        raise Unreachable(f"reading {mark.path}: unexpected answer {output[:80]!r}")
    inode = int(parts[1])
    lines: list[str] = []
    if rest.startswith(b"@@old\n"):
        old, _, rest = rest[len(b"@@old\n") :].partition(b"\n@@end-old\n")
        lines += _clean(old.decode("utf-8", "replace").split("\n"))
    if rest.startswith(b"@@rotated\n"):
        new_lines, consumed = _whole_lines(rest[len(b"@@rotated\n") :])
        return LogChunk(lines + new_lines, LogMark(mark.path, consumed, inode))
    if rest.startswith(b"@@new\n"):
        new_lines, consumed = _whole_lines(rest[len(b"@@new\n") :])
        return LogChunk(new_lines, LogMark(mark.path, mark.size + consumed, inode))
    raise Unreachable(f"reading {mark.path}: unexpected answer {output[:80]!r}")


def read_log(transport: Transport, mark: LogMark, timeout: float = 30.0) -> LogChunk:
    result = transport.run(script_argv(READ_SCRIPT, mark.path, str(mark.size), str(mark.inode)), timeout=timeout)
    if not result.ok:
        raise Unreachable(f"{transport.label}: cannot read {mark.path}: {result.err_text()[:200]}")
    return parse_read(result.stdout, mark)
