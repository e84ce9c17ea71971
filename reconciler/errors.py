"""Errors sorted by what to do about them.

Following Flux (Stalling vs. requeue) and kopf (PermanentError vs. TemporaryError), every failure the reconciler
reports is one of two kinds: `Stalled` needs a person (an invalid manifest, a module that does not compile, an
unknown host key) and retrying the same commit cannot help; `Transient` may pass on its own (a server unreachable,
a timeout) so a daemon retries with backoff. Library exceptions are wrapped with `raise ... from e` at the seam
where they happen, so the CLI prints one clear sentence and never a traceback.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error the user is meant to read. `str(e)` is the whole message."""

    #: what the user should do next, printed after the message when set
    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def render(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class Stalled(ReconcilerError):
    """Needs a person: retrying the same input gives the same failure."""


class Transient(ReconcilerError):
    """May pass on its own: retry the same commit later."""


def _listing(what: str, errors: list[str], total: int | None) -> str:
    n = total if total is not None else len(errors)
    return f"{what} ({n:,} error{'s' if n != 1 else ''}):\n  " + "\n  ".join(errors)


class ManifestInvalid(Stalled):
    """The manifest does not validate. `errors` holds one `file:line: key.path: message` string per problem.

    `total` counts every problem when `errors` lists only the first ones (plus a "... and N more" line)."""

    hint = "fix these lines and run `zato-gitops validate` again"

    def __init__(self, errors: list[str], total: int | None = None) -> None:
        self.errors = list(errors)
        super().__init__(_listing("the manifest is invalid", self.errors, total))


class ConfigInvalid(Stalled):
    """The --config file (or a flag) does not validate; `errors` as for `ManifestInvalid`."""

    hint = "fix the config file (its keys are the long options, with '_' for '-'; `zato-gitops docs cli`)"

    def __init__(self, errors: list[str], total: int | None = None, *, hint: str = "") -> None:
        self.errors = list(errors)
        super().__init__(_listing("the settings are invalid", self.errors, total), hint=hint)


class ModulesInvalid(Stalled):
    """One or more modules of the commit do not compile; the commit is refused before any server is touched."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__(
            "the commit is refused, no server was touched; these modules do not compile:\n  " + "\n  ".join(errors)
        )


class HostKeyError(Stalled):
    """The server's SSH host key is unknown or has changed; never accepted automatically."""


class Unreachable(Transient):
    """A server could not be reached or did not answer in time."""


class Interrupted(Transient):
    """Work stopped before its next step (the cluster lease could not be renewed): it resumes at the next run."""


class Busy(Transient):
    """Another zato-gitops holds the state dir's lock (a manual apply beside the daemon): try again shortly."""


class SourceError(Transient):
    """The git remote could not be read (network, auth); the message never carries credentials."""
