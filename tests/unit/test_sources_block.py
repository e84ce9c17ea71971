"""The reconciler's block in service-sources.txt: other lines kept, hot-deploy line last, idempotent."""

from __future__ import annotations

from reconciler.zato.sources import BEGIN, END, block_lines, entries, render

SHIPPED = """# Visit https://zato.io/docs for more information.

# List your service sources below, each on a separate line.
./my-own-services

# Recommended to be always the very last line
./work/hot-deploy/current
"""


def test_block_goes_before_the_hot_deploy_line_and_keeps_other_lines() -> None:
    new = render(SHIPPED, ("./static/billing", "acme.crm.api"))
    lines = new.splitlines()
    assert lines[-1] == "./work/hot-deploy/current"
    assert "./my-own-services" in lines
    assert lines.index(BEGIN) < lines.index("./static/billing") < lines.index(END) < len(lines) - 1
    assert entries(new) == ("./my-own-services", "./static/billing", "acme.crm.api", "./work/hot-deploy/current")
    assert block_lines(new) == ("./static/billing", "acme.crm.api")
    # every line outside the block is kept, in order
    outside = [line for line in new.splitlines() if line not in lines[lines.index(BEGIN) : lines.index(END) + 1]]
    assert outside == SHIPPED.splitlines()


def test_render_is_idempotent_and_replaces_an_edited_block() -> None:
    once = render(SHIPPED, ("./a",))
    assert render(once, ("./a",)) == once
    edited = once.replace("./a", "./hand-edited")
    assert block_lines(edited) == ("./hand-edited",)
    assert render(edited, ("./a",)) == once


def test_empty_lines_remove_the_block() -> None:
    assert render(render(SHIPPED, ("./a",)), ()) == SHIPPED


def test_missing_file_gets_the_block_and_the_hot_deploy_line() -> None:
    new = render(None, ("./a",))
    assert entries(new) == ("./a", "./work/hot-deploy/current")
    assert block_lines(None) == ()


QUICKSTART = SHIPPED.rstrip("\n")  # a fresh quickstart: no newline after the last line


def test_a_file_without_a_final_newline_gets_the_block_unglued_and_stays_without_one() -> None:
    new = render(QUICKSTART, ("./static/billing",))
    assert entries(new) == ("./my-own-services", "./static/billing", "./work/hot-deploy/current")
    assert new.endswith("\n./work/hot-deploy/current")  # still no final newline, as the server left it
    assert render(new, ("./static/billing",)) == new
    assert render(new, ()) == QUICKSTART


def test_no_hot_deploy_line_and_no_final_newline_still_never_glue() -> None:
    new = render("# comment\n./mine", ("./a",))
    assert entries(new) == ("./mine", "./a")
    assert new == f"# comment\n./mine\n{BEGIN}\n# Managed by zato-gitops from the services repository; edits inside " \
        f"this block are put back.\n./a\n{END}"


def test_crlf_and_trailing_blanks_are_kept() -> None:
    crlf = SHIPPED.replace("\n", "\r\n")
    new = render(crlf, ("./a",))
    assert "\n" not in new.replace("\r\n", "") and new.endswith("./work/hot-deploy/current\r\n")
    assert render(new, ()) == crlf
    blanks = SHIPPED.replace("./work/hot-deploy/current\n", "./work/hot-deploy/current  \t\n   \n\n")
    new = render(blanks, ("./a",))
    assert entries(new)[-2:] == ("./a", "./work/hot-deploy/current")
    assert render(new, ()) == blanks
