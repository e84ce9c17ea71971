"""Logging for the daemon: one line per event, for people by default or JSON for log shippers, never a secret.

Why a formatter and a filter of our own rather than a logging library: the daemon's lines must be greppable
(`2024-05-01T12:00:00.000Z INFO  prod: revision 3f2a... applied`) and, with `--log-format json`, one JSON object
per line that Loki, Elasticsearch or journald's JSON export take as is, with the fields passed as `extra=`
(cluster, revision, event...) as keys of their own.

Why the filter: secrets reach log lines by accident, mostly as credentials inside a git remote URL in an error
message, or a token echoed back by a web server. Every record goes through `source.redact` (credentials in URLs)
and has every registered secret value (the webhook secret) replaced by `***`, whichever logger wrote it; this
runs on the root handler, so library loggers (APScheduler, paramiko) are covered too.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal, TextIO

from reconciler.gitrepo.source import redact

#: attributes every LogRecord has; anything else on a record came from `extra=` and is a field of the event
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _when(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class RedactFilter(logging.Filter):
    """Rewrites each record's message with credentials and known secrets masked."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self.secrets = [s for s in (secrets or []) if s]

    def clean(self, text: str) -> str:
        text = redact(text)
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        msg = self.clean(record.getMessage())
        record.msg, record.args = msg, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for k, v in list(vars(record).items()):
            if k not in _STANDARD and isinstance(v, str):
                setattr(record, k, self.clean(v))
        return True


class TextFormatter(logging.Formatter):
    """`2024-05-01T12:00:00.000Z INFO    message`, always one line: a multi-line message (a list of compile
    errors) is joined with ` | `, so `grep` and `tail -f` show whole events."""

    def format(self, record: logging.LogRecord) -> str:
        message = " | ".join(part.strip() for part in record.getMessage().splitlines() if part.strip())
        line = f"{_when(record)} {record.levelname:<7} {message}"
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"at": _when(record), "level": record.levelname.lower(), "logger": record.name,
                                "message": record.getMessage()}
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                data[k] = v
        if record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, default=str)


def setup(fmt: Literal["text", "json"] = "text", secrets: list[str] | None = None, stream: TextIO | None = None,
          level: int = logging.INFO) -> logging.Handler:
    """Route every logger to one handler on stderr with the chosen format and the redaction filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter(secrets))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # APScheduler logs every job run at INFO ("Running job ..."): one line per poll is the noise we promise not
    # to make; its warnings (a missed run) and errors still come through
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    return handler
