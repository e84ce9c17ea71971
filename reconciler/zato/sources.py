"""service-sources.txt: the reconciler's marked block, and what Zato makes of each line.

Zato reads the file once, at start (2.0 to 3.3): one entry per line, whitespace stripped, blank lines and lines
starting with `#` skipped, relative entries resolved against the server directory. The file is shared with the
operator, so the reconciler owns only the lines between `# BEGIN zato-gitops` and `# END zato-gitops` and keeps
every other line as it is. The shipped `./work/hot-deploy/current` line must stay last (Zato 3.0's own comment
asks it; removing it loses every hot-deployed service at the next restart), so the block goes right before it.

The file is rebuilt line by line, never appended to: a fresh quickstart writes it without a newline after the last
line, and text added after such a file would glue two entries into one. Its line ends (LF or CRLF) and whether it
ended with a newline are kept as they were, so a file we leave is the file the server and its operator know.
"""

from __future__ import annotations

BEGIN = "# BEGIN zato-gitops"
END = "# END zato-gitops"
HOT_DEPLOY_LINE = "./work/hot-deploy/current"
_NOTE = "# Managed by zato-gitops from the services repository; edits inside this block are put back."


def block_lines(text: str | None) -> tuple[str, ...]:
    """The entries inside our block (comments and blanks left out); () when there is no block."""
    if text is None:
        return ()
    out: list[str] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if line == BEGIN:
            inside = True
        elif line == END:
            inside = False
        elif inside and line and not line.startswith("#"):
            out.append(line)
    return tuple(out)


def entries(text: str | None) -> tuple[str, ...]:
    """Every entry Zato would read from the file, in order."""
    if text is None:
        return ()
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


def render(text: str | None, lines: tuple[str, ...]) -> str:
    """The file with our block set to `lines` (removed when empty), every other line kept, placed before the
    hot-deploy line so that line stays last. Line ends and the presence of a final newline are kept."""
    eol = "\r\n" if text and "\r\n" in text else "\n"
    final = eol if text is None or text.endswith(("\n", "\r")) or not text else ""
    kept: list[str] = []
    inside = False
    for raw in (text or "").splitlines():
        stripped = raw.strip()
        if stripped == BEGIN:
            inside = True
            continue
        if stripped == END:
            inside = False
            continue
        if not inside:
            kept.append(raw)
    if text is None:
        kept = [HOT_DEPLOY_LINE]
    if not lines:
        return eol.join(kept) + final if kept else ""
    block = [BEGIN, _NOTE, *lines, END]
    at = next((i for i in range(len(kept) - 1, -1, -1) if kept[i].strip() == HOT_DEPLOY_LINE), None)
    new = [*kept, *block] if at is None else [*kept[:at], *block, *kept[at:]]
    return eol.join(new) + final
