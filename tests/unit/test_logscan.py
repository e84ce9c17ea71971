"""Confirmation verdicts from real-format Zato log lines, per profile (docs/zato-facts.md section 3)."""

from __future__ import annotations

from reconciler.zato.logscan import ConfirmScanner
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
    assert v.evidence[:2] == [err, err]


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
