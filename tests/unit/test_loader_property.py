"""Any bytes, any YAML into the manifest and config loaders: a clean error or a result, never an escape.

Property tests (hypothesis) for the promise the CLI makes: whatever file a person points `validate --file` or
`--config` at, the answer is `error:` lines with file:line, not a traceback and not gigabytes of memory. Memory is
bounded with tracemalloc (the peak of one load), not with time. The cases from issue 10 are pinned by name below.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.errors import ConfigInvalid, ManifestInvalid, ReconcilerError, Stalled
from reconciler.manifest.loader import MAX_ERRORS, cron_problem, load_manifest
from reconciler.settings import load_settings

#: no load may use more than this at its peak (the 149 KB alias bomb once took 1.5 GB)
PEAK_BYTES = 64 * 1024 * 1024

VALID = """version: 1
clusters:
  - name: prod
    zato_version: "3.2"
    servers:
      - {name: server1, host: 10.0.0.11, user: zato, path: /opt/zato/env/prod/server1}
    hot_deploy: [services/*.py]
    rollout: {window: "0 2 * * 1-5"}
"""


def _bounded(fn: object, *args: object) -> Exception | None:
    """Run fn(*args) under tracemalloc; return the ReconcilerError it raised (or None); fail on a memory blow-up."""
    tracemalloc.start()
    try:
        fn(*args)  # type: ignore[operator]
        return None
    except ReconcilerError as e:
        return e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < PEAK_BYTES, f"peak {peak:,} bytes"


def _config(tmp: Path, data: bytes) -> Exception | None:
    cfg = tmp / "config.yaml"
    cfg.write_bytes(data)
    return _bounded(load_settings, cfg, {})


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
    st.sampled_from(["!!float abc", "!!int 0xZZ", "2001-13-45", "2020-02-30", "9" * 4400, "*nosuch", "&a x",
                     "!!binary zz", "!!timestamp x", "!!python/name:os.system", "<<: 1", "? [a]", "0 2 * * *",
                     "61 2 * * *", "\x00", "\t", "'unclosed", "{a: [}"]),
)
trees = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.one_of(st.text(max_size=12), st.sampled_from(["version", "clusters", "servers", "name", "rollout", "window",
                                                     "repo", "listen", "interval", "hot_deploy"])),
    kids, max_size=4), max_leaves=20)


def _as_yaml(tree: object) -> str:
    """A tree dumped as YAML, with the sampled junk written as raw text (so tags and broken syntax stay)."""
    text = yaml.safe_dump(tree, allow_unicode=True)
    return text.replace("'!!", "!!").replace("'*", "*").replace("'&", "&")


mutations = st.tuples(st.integers(0, len(VALID)), st.integers(0, 40), st.text(max_size=20)).map(
    lambda m: VALID[: m[0]] + m[2] + VALID[m[0] + m[1]:]
)

HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@HYP
@given(st.binary(max_size=2000))
def test_any_bytes_as_a_manifest(data: bytes) -> None:
    e = _bounded(load_manifest, data, "m.yaml")
    assert e is None or isinstance(e, ManifestInvalid)


@HYP
@given(st.one_of(trees.map(_as_yaml), mutations))
def test_any_yaml_as_a_manifest(text: str) -> None:
    e = _bounded(load_manifest, text, "m.yaml")
    if e is not None:
        assert isinstance(e, ManifestInvalid) and all(m.startswith("m.yaml:") for m in e.errors[:MAX_ERRORS])


@HYP
@given(st.binary(max_size=2000))
def test_any_bytes_as_a_config(tmp_path: Path, data: bytes) -> None:
    e = _config(tmp_path, data)
    assert e is None or isinstance(e, ConfigInvalid)


@HYP
@given(st.one_of(trees.map(_as_yaml), st.dictionaries(st.sampled_from(["repo", "listen", "interval", "jitter",
                                                                         "notify_urls", "branch"]), scalars)
                 .map(_as_yaml)))
def test_any_yaml_as_a_config(tmp_path: Path, text: str) -> None:
    e = _config(tmp_path, text.encode())
    assert e is None or isinstance(e, ConfigInvalid)


# --- the cases of issue 10, one by one -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "error"), [
    (b"version: 1\nclusters: \xff\xfe\n", "m.yaml:2: not UTF-8 text (byte 0xff at column 11); save the file as UTF-8"),
    ("version: 1\nname: 2001-13-45\n", "m.yaml:2: name: cannot read the date '2001-13-45': no such date"),
    ("version: 1\nname: 2020-02-30\n", "m.yaml:2: name: cannot read the date '2020-02-30': no such date"),
    ("version: !!float abc\n", "m.yaml:1: version: cannot read the number 'abc': not a valid number"),
    ("version: !!int 0xZZ\n", "m.yaml:1: version: cannot read the whole number '0xZZ': not a valid whole number"),
    ("version: " + "9" * 4400 + "\n", "m.yaml:1: version: cannot read the whole number '9999"),
])
def test_values_pyyaml_cannot_construct(text: str | bytes, error: str) -> None:
    with pytest.raises(ManifestInvalid) as e:
        load_manifest(text, "m.yaml")
    assert any(m.startswith(error) for m in e.value.errors)
    assert all(len(m) < 500 for m in e.value.errors)


def test_a_binary_file_is_named_not_decoded() -> None:
    with pytest.raises(ManifestInvalid) as e:
        load_manifest(Path("/bin/ls").read_bytes(), "/bin/ls")
    assert e.value.errors[0].startswith("/bin/ls:1: ") and len(e.value.errors) == 1


def test_an_alias_bomb_stays_small() -> None:
    """20,000 aliases of one 8 KB string: a capped list of short errors, a bounded peak."""
    text = "version: 1\nx: &a " + "y" * 8192 + "\nclusters:\n" + "  - *a\n" * 20_000
    e = _bounded(load_manifest, text, "m.yaml")
    assert isinstance(e, ManifestInvalid)
    assert len(e.errors) == MAX_ERRORS + 1 and e.errors[-1].startswith("... and ")
    assert "(20,001 errors)" in e.message
    assert len(e.render()) < 50_000


@pytest.mark.parametrize(("window", "problem"), [
    ("61 2 * * *", "cron minute field '61': 61 is out of range (allowed 0-59)"),
    ("0 24 * * *", "cron hour field '24': 24 is out of range"),
    ("0 2 0 * *", "cron day of month field '0': 0 is out of range"),
    ("0 2 * 13 *", "cron month field '13': 13 is out of range"),
    ("0 2 * * 8", "cron day of week field '8': 8 is out of range"),
    ("0 2 * * fri-mon", "the range 'fri-mon' runs backwards"),
    ("*/0 2 * * *", "step '0' must be a whole number of at least 1"),
    ("0 2 * * xyz", "'xyz' is not a number or a name"),
])
def test_cron_ranges_are_checked_where_read(window: str, problem: str) -> None:
    assert problem in (cron_problem(window) or "")
    with pytest.raises(ManifestInvalid) as e:
        load_manifest(VALID.replace("0 2 * * 1-5", window), "m.yaml")
    assert isinstance(e.value, Stalled)  # the daemon waits for a new commit instead of retrying it
    assert e.value.errors == [f"m.yaml:8: clusters[0].rollout.window: {cron_problem(window)}"]


@pytest.mark.parametrize("window", ["0 2 * * *", "*/15 0-5 1,15 jan-mar mon-fri", "0 2 * * 0,7", "30 1 ? * sun"])
def test_good_cron_windows_pass(window: str) -> None:
    assert cron_problem(window) is None
    load_manifest(VALID.replace("0 2 * * 1-5", window), "m.yaml")


@pytest.mark.parametrize(("text", "error"), [
    (b"\x7fELF\x02\x01\x01\x00\xff", ":1: not UTF-8 text"),
    (b"repo: x\nlisten: foo\n", ":2: listen: must be HOST:PORT"),
    (b"repo: x\nlisten: 127.0.0.1:99999\n", ":2: listen: the port must be at most 65535, got 99999"),
    (b"repo: x\ninterval: !!float abc\n", ":2: interval: cannot read the number 'abc'"),
    (b"repo: x\nrepo: y\n", ":2: repo: duplicate key (first at line 1)"),
    (b"repo: x\n\nconfirm-timeout: -1\n", ":3: confirm_timeout: must be greater than 0"),
])
def test_config_errors_name_the_line(tmp_path: Path, text: bytes, error: str) -> None:
    e = _config(tmp_path, text)
    assert isinstance(e, ConfigInvalid)
    assert f"{tmp_path / 'config.yaml'}{error}" in e.message


def test_a_bad_listen_flag_is_named_as_the_flag() -> None:
    with pytest.raises(ConfigInvalid, match=r"--listen: must be HOST:PORT"):
        load_settings(None, {"listen": "foo"})
