"""Version profiles: everything that differs between Zato 2.0, 3.0, 3.2, 3.3 and 4.1 in one table.

The rest of the reconciler asks the profile instead of comparing version strings, so adding a version is one
entry here. The facts behind each field are in docs/zato-facts.md (how hot-deploy confirms, whether one drop fans
out to the cluster, whether service-sources.txt exists, where the deployed copy of a module lives).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

VersionName = Literal["2.0", "3.0", "3.2", "3.3", "4.1"]
VERSIONS: tuple[VersionName, ...] = ("2.0", "3.0", "3.2", "3.3", "4.1")
DEFAULT_VERSION: VersionName = "3.2"

# `Deployed 1 service from `/srv/.../my_mod.py` -> ['my-mod.get-customer']` (3.2, 3.3, 4.1)
_DEPLOYED = re.compile(r"Deployed (?P<count>\d+) services? from `(?P<path>[^`]+)` -> (?P<services>\[.*\])")
# `Uploaded package id:[22], payload_name:[crm.py]` (2.0)
_UPLOADED_20 = re.compile(r"Uploaded package id:\[(?P<id>\d+)\], payload_name:\[(?P<path>[^\]]+)\]")
# `Uploaded package id:`22`, payload_name:`my_mod.py`` (3.0, 3.1)
_UPLOADED_30 = re.compile(r"Uploaded package id:`(?P<id>\d+)`, payload_name:`(?P<path>[^`]+)`")
# `Package id:[N], payload_name:[x.py] has not been deployed` (2.0, WARN)
_NOT_DEPLOYED_20 = re.compile(r"Package id:\[(?P<id>\d+)\], payload_name:\[(?P<path>[^\]]+)\] has not been deployed")
# `Could not load source, file_name:`<path>`, e:`<traceback>`` (3.x, 4.1; logged twice)
_COULD_NOT_LOAD = re.compile(r"Could not load source, file_name:`(?P<path>[^`]+)`")
# `Deployed 1 model from ...`, `Deployed 2 connector types from ...` as well (4.1)
_DEPLOYED_41 = re.compile(
    r"Deployed (?P<count>\d+) (?:services?|models?|connector types?) from `(?P<path>[^`]+)`"
    r"(?: -> (?P<services>\[.*\]))?"
)
# `No services nor models were deployed from module `my_mod.py`` (4.1: `No services, models nor connector types ...`)
_NOTHING_DEPLOYED = re.compile(
    r"No services(?: nor models|, models nor connector types) were deployed from module `(?P<path>[^`]+)`"
)
# WARNING `Could not import module `my_mod` to look for connectors` (4.1, before its `No services, models ...`)
_NO_CONNECTORS_41 = re.compile(r"Could not import module `(?P<path>[^`]+)` to look for connectors")
# `Could not import module `<entry>`` (service-sources.txt entry at start)
_COULD_NOT_IMPORT = re.compile(r"Could not import module `(?P<path>[^`]+)`")
# ``Started `server1@cluster` (pid: 1234)``
_STARTED = re.compile(r"Started `(?P<name>[^`]+)` \(pid: (?P<pid>\d+)\)")


@dataclass(frozen=True)
class Profile:
    """How one Zato version installs and reports services."""

    version: VersionName
    #: success line of a hot-deploy; group `path` holds the module's file name or path
    success: re.Pattern[str]
    #: failure lines of a hot-deploy; group `path` as above
    failures: tuple[re.Pattern[str], ...]
    #: one drop into one server's pickup dir deploys to every server of the cluster (2.0 to 3.3)
    fan_out: bool
    #: service-sources.txt exists and is read at start (2.0 to 3.3; gone in 4.1)
    service_sources: bool
    #: the folder whose *.py files are what the server runs: work/hot-deploy/current, or the pickup dir (4.1)
    deployed_in: Literal["work", "pickup"]
    #: the pickup watcher: inotify CLOSE_WRITE (renames never seen) or directory snapshots every 1.1 s
    watcher: Literal["close_write", "poll"]
    #: server.conf [main] key holding the HTTP address
    bind_key: str
    #: files already in the pickup dir are re-deployed at every start (4.1)
    redeploys_pickup_at_start: bool

    @property
    def nothing_deployed(self) -> re.Pattern[str]:
        """`No services nor models were deployed ...`: a failure after a load error, a success for a module with
        no service in it."""
        return _NOTHING_DEPLOYED


PROFILES: dict[VersionName, Profile] = {
    "2.0": Profile("2.0", _UPLOADED_20, (_NOT_DEPLOYED_20,), True, True, "work", "close_write", "gunicorn_bind", False),
    "3.0": Profile("3.0", _UPLOADED_30, (_COULD_NOT_LOAD,), True, True, "work", "close_write", "gunicorn_bind", False),
    "3.2": Profile("3.2", _DEPLOYED, (_COULD_NOT_LOAD,), True, True, "work", "close_write", "gunicorn_bind", False),
    "3.3": Profile("3.3", _DEPLOYED, (_COULD_NOT_LOAD,), True, True, "work", "poll", "gunicorn_bind", False),
    "4.1": Profile(
        "4.1", _DEPLOYED_41, (_COULD_NOT_LOAD, _NO_CONNECTORS_41), False, False, "pickup", "poll", "bind", True
    ),
}

STARTED = _STARTED
COULD_NOT_IMPORT = _COULD_NOT_IMPORT
COULD_NOT_LOAD = _COULD_NOT_LOAD


def profile(version: str) -> Profile:
    """The profile of a version name; the manifest model has already refused unknown names."""
    return PROFILES[version]  # type: ignore[index]
