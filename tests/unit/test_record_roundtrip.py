"""Property tests (hypothesis): a record survives the journal and the note as it was, and a note line this version
does not fully know (an unknown action, extra fields) is written back as it was read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.gitrepo.notes import record_line
from reconciler.gitrepo.records import Action, Reason, Record

text = st.text(max_size=12)

records = st.builds(
    Record,
    at=st.text(min_size=1, max_size=12), run=text, by=text, commit=text, action=st.sampled_from(list(Action)),
    outcome=text, cluster=text,
    server=text, module=text, blob=text, sha256=text, dropped=st.none() | st.booleans(), rollout=text, started=text,
    finished=text, ready=text, duration=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    files=st.none() | st.lists(text, max_size=3).map(tuple), reason=st.none() | st.sampled_from(list(Reason)),
    detail=text,
)


@given(records)
def test_a_record_reads_back_as_it_was_written(record: Record) -> None:
    assert Record.from_dict(record.to_dict()) == record
    line = json.loads(record_line(record.to_dict(), datetime.now(UTC)))
    assert next(iter(line)) == "at" and Record.from_dict(line) == record


scalars = st.none() | st.booleans() | st.integers() | text
unknown = st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in Record.__dataclass_fields__),
                          scalars, max_size=3)


@given(records, unknown, st.none() | st.text(min_size=1, max_size=8))
def test_a_line_from_a_newer_version_is_written_back_as_it_was_read(
    record: Record, extra: dict[str, Any], action: str | None
) -> None:
    data = record.to_dict() | extra
    if action is not None:
        data["action"] = action
    again = Record.from_dict(data).to_dict()
    if action is None or action in {str(a) for a in Action}:
        assert again == data
    else:  # an action this version does not know is kept, though the record reads as a refusal
        assert again["action"] == action and Record.from_dict(data).action == Action.REFUSED
        assert {k: v for k, v in again.items() if k != "action"} == {k: v for k, v in data.items() if k != "action"}
