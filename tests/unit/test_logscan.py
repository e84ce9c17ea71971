"""Confirmation verdicts from real-format Zato log lines, per profile (docs/zato-facts.md section 3)."""

from __future__ import annotations

from reconciler.zato.logscan import ConfirmScanner, clean_line
from reconciler.zato.profiles import profile

P = "2026-11-24 08:00:00,123 - INFO - 4242:Dummy-1 - zato.server.service.store:1 - "
E = "2026-11-24 08:00:00,123 - ERROR - 4242:Dummy-1 - zato.server.service.store:1 - "


def test_32_success_matches_on_file_name_of_full_path() -> None:
    sc = ConfirmScanner(profile("3.2"), {"my_mod.py", "other.py"})
    sc.feed([P + "Deployed 1 service from `/srv/zato/server1/work/hot-deploy/current/my_mod.py` -> "
             "['my-mod.get-customer']"])
    assert sc.verdicts["my_mod.py"].status == "confirmed"
    assert sc.pending == {"other.py"}
    sc.feed([P + "Deployed 2 services from `/x/other.py` -> ['a', 'b']"])
    assert sc.done


def test_32_load_error_then_nothing_deployed_is_a_failure_with_evidence() -> None:
    sc = ConfirmScanner(profile("3.2"), {"bad.py"})
    err = E + "Could not load source, file_name:`/srv/work/hot-deploy/current/bad.py`, e:`Traceback...`"
    sc.feed([err, err, P + "No services nor models were deployed from module `bad.py`"])
    v = sc.verdicts["bad.py"]
    assert v.status == "failed"
    assert v.evidence[0] == err and err not in v.evidence[1:]  # Zato logs it twice; it is quoted once


def test_module_without_services_is_confirmed() -> None:
    sc = ConfirmScanner(profile("3.3"), {"helpers.py"})
    sc.feed([P + "No services nor models were deployed from module `helpers.py`"])
    assert sc.verdicts["helpers.py"].status == "confirmed"


def test_20_and_30_lines() -> None:
    s20 = ConfirmScanner(profile("2.0"), {"crm.py", "bad.py"})
    s20.feed([P + "Uploaded package id:[22], payload_name:[crm.py]",
              "... - WARNING - ... - Package id:[23], payload_name:[bad.py] has not been deployed"])
    assert s20.verdicts["crm.py"].status == "confirmed"
    assert s20.verdicts["bad.py"].status == "failed"
    s30 = ConfirmScanner(profile("3.0"), {"my_mod.py"})
    s30.feed([P + "Uploaded package id:`22`, payload_name:`my_mod.py`"])
    assert s30.verdicts["my_mod.py"].status == "confirmed"


def test_other_modules_and_versions_lines_are_ignored() -> None:
    sc = ConfirmScanner(profile("3.2"), {"a.py"})
    sc.feed([P + "Deployed 1 service from `/x/ab.py` -> ['x']", P + "Uploaded package id:`1`, payload_name:`a.py`"])
    assert not sc.verdicts and sc.pending == {"a.py"}
    assert len(sc.lines) == 2


def test_a_load_error_keeps_its_traceback_as_evidence() -> None:
    sc = ConfirmScanner(profile("3.2"), {"bad.py"})
    sc.feed([
        "2026-11-24 08:00:00,123 - ERROR - 1:M - zato.server.service.store:1 - Could not load source, "
        "file_name:`/w/bad.py`, e:`Traceback (most recent call last):",
        '  File "/w/bad.py", line 1, in <module>',
        "ModuleNotFoundError: No module named 'nope'`",
        "2026-11-24 08:00:00,124 - INFO - 1:M - zato:1 - No services nor models were deployed from module `bad.py`",
    ])
    v = sc.verdicts["bad.py"]
    assert v.status == "failed"
    assert "ModuleNotFoundError: No module named 'nope'`" in v.evidence
    assert v.evidence[-1].endswith("No services nor models were deployed from module `bad.py`")


# colour codes as Zato 3.2 writes them (docs/zato-facts.md: what a real server logs)
CI = "2026-11-24 08:00:00,123 - \x1b[1;37mINFO\x1b[0m - 27032:Dummy-39 - zato.hot-deploy.create:0 - "
CE = "2026-11-24 08:00:00,123 - \x1b[1;31mERROR\x1b[0m - 27032:Dummy-39 - zato.server.service.store:0 - "


def test_clean_line_strips_colour_codes_and_control_characters() -> None:
    assert clean_line(CI + "x") == "2026-11-24 08:00:00,123 - INFO - 27032:Dummy-39 - zato.hot-deploy.create:0 - x"
    assert clean_line("a\x1b]0;title\x07b\x1b[2Kc\x1bd\re\tf") == "abcde\tf"


def test_coloured_lines_confirm_and_are_kept_clean() -> None:
    sc = ConfirmScanner(profile("3.2"), {"rz_two.py"})
    sc.feed([CI + "Deployed 1 service from `/srv/server1/work/hot-deploy/current/rz_two.py` -> ['rz.two']"])
    v = sc.verdicts["rz_two.py"]
    assert v.status == "confirmed"
    assert "\x1b" not in v.line and " - INFO - " in v.line
    assert not any("\x1b" in line for line in sc.lines)


def test_a_traceback_ends_at_the_backtick_line_is_quoted_once_and_belongs_to_its_module() -> None:
    """Two identical multi-line records (Zato logs the error twice), each closed by a line holding only a backtick;
    lines after the backtick that are not records do not join the evidence; another module's lines stay apart."""
    record = [
        CE + "Could not load source, file_name:`/s/work/hot-deploy/current/bad.py`, e:`Traceback (most recent call "
        "last):",
        '  File "/s/work/hot-deploy/current/bad.py", line 4',
        "    def handle(self)",
        "SyntaxError: expected ':'",
        "`",
    ]
    sc = ConfirmScanner(profile("3.2"), {"bad.py", "good.py"})
    sc.feed([*record, *record, "stray text that is no record", CI + "No services nor models were deployed from module "
             "`bad.py`", CI + "Deployed 1 service from `/s/work/hot-deploy/current/good.py` -> ['good.x']"])
    bad = sc.verdicts["bad.py"]
    assert bad.status == "failed"
    assert bad.evidence == [clean_line(line) for line in record] + [
        clean_line(CI + "No services nor models were deployed from module `bad.py`")]
    assert sc.verdicts["good.py"].status == "confirmed"
    assert not any("\x1b" in line for line in bad.evidence)


def test_41_failure_and_success_lines() -> None:
    sc = ConfirmScanner(profile("4.1"), {"broken.py", "models.py", "helpers.py", "svc.py"})
    W = "2026-11-24 08:00:00,123 - WARNING - 1:M - zato.hot-deploy.create:0 - "
    sc.feed([
        W + "Could not import module `broken` to look for connectors",
        P + "No services, models nor connector types were deployed from module `broken`",
        P + "Deployed 2 models from `/s/pickup/incoming/services/models.py`",
        P + "No services, models nor connector types were deployed from module `helpers.py`",
        P + "Deployed 1 service from `/s/pickup/incoming/services/svc.py` -> ['svc.x']",
    ])
    assert {m: v.status for m, v in sc.verdicts.items()} == {
        "broken.py": "failed", "models.py": "confirmed", "helpers.py": "confirmed", "svc.py": "confirmed"}
    assert "to look for connectors" in sc.verdicts["broken.py"].evidence[0]
