"""zato-gitops.yaml text -> a validated `Manifest`, with every problem pointed at a file:line and a key path.

Why not `yaml.safe_load` + `Manifest.model_validate`: safe_load throws the line numbers away, silently keeps
the last of two duplicate keys, and pydantic's messages ("Input should be a valid integer") name neither the
line nor the key as the user wrote it. The manifest is written by people and read by a daemon that refuses
the whole commit when it does not validate, so the error has to say exactly where to look, and list every
problem at once so one push can fix them all.

So the text is composed into YAML nodes (which carry their marks), turned into plain Python data by hand
while a key path -> line table is recorded and duplicate keys are caught, and only then validated by the
pydantic model. Each pydantic error's `loc` is a key path, so the table turns it into
`FILE:LINE: key.path: message`. The same table stays with the result (`LoadedManifest.line_of`) so later
stages (planning, hot-deploy refusals) can point at the line of `clusters[0].hot_deploy[1]` too.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reconciler.errors import ManifestInvalid
from reconciler.manifest.model import _NAME, KeyPath, Manifest, Problems, format_key_path

DEFAULT_FILENAME = "zato-gitops.yaml"

#: alias expansion can turn a small file into a huge tree ("billion laughs"); no real manifest is near these
_MAX_NODES = 100_000
_MAX_DEPTH = 64
#: a manifest or config file larger than this is refused before it is parsed (memory stays bounded)
MAX_BYTES = 2 * 1024 * 1024
#: at most this many problems are listed; the rest are counted (one bad anchor used 20,000 times is one fix)
MAX_ERRORS = 50
#: a message never quotes more than this many characters of a value
PREVIEW = 60
#: nor is any one message longer than this
MAX_MESSAGE = 400

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"

_MODULE_WARNING = (
    "Zato {version} resolves service-sources.txt entries as paths, so a dotted module name will most likely "
    "fail to import at start; prefer a directory (path + target). The log check after the restart decides."
)


@dataclass(frozen=True)
class LoadedManifest:
    """A valid manifest, the warnings it raised, and where each of its keys is in the file."""

    manifest: Manifest
    warnings: tuple[str, ...] = ()
    filename: str = DEFAULT_FILENAME
    _lines: Mapping[KeyPath, int] = field(default_factory=dict, repr=False, compare=False, hash=False)

    def line_of(self, key_path: KeyPath) -> int:
        """The 1-based line of `key_path`, e.g. `("clusters", 0, "hot_deploy", 1)`.

        A scalar is the line of its value, a mapping or list under a key the line of that key, a list item
        the line of its `-`. A path not in the file (a defaulted key) gives the line of its nearest ancestor.
        """
        return _line_of(self._lines, tuple(key_path))

    def where(self, key_path: KeyPath) -> str:
        """`FILE:LINE: key.path`, the prefix of a message about that key."""
        path = tuple(key_path)
        head = f"{self.filename}:{self.line_of(path)}"
        return f"{head}: {format_key_path(path)}" if path else head


class YamlInvalid(Exception):
    """The text is not YAML this loader reads; `errors` holds `FILE:LINE: message` strings (at most MAX_ERRORS)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass(frozen=True)
class YamlDoc:
    """Plain data from a YAML file, where each key path is, and the problems found on the way."""

    data: Any
    lines: Mapping[KeyPath, int]
    key_lines: Mapping[KeyPath, int]
    #: (line, key path, message) per value that could not be read; those paths are left out of `data`
    errors: list[tuple[int, KeyPath, str]]
    dropped: list[KeyPath]
    root_line: int


def parse_yaml(source: str | bytes, filename: str) -> YamlDoc:
    """Any bytes, any YAML -> plain data with line numbers; raise `YamlInvalid` for what cannot be read at all.

    Never lets another exception through: bytes that are not UTF-8, a file too large, a YAML syntax error, an
    alias bomb, a value PyYAML's constructors choke on (`!!float abc`, `2020-02-30`, an integer of 5,000 digits)
    all become messages with the file and line.
    """
    if len(source) > MAX_BYTES:
        raise YamlInvalid([f"{filename}:1: the file is larger than {MAX_BYTES:,} bytes; is it the right file?"])
    text = _decode(source, filename) if isinstance(source, bytes) else source
    root = _compose(text, filename)
    walker = _Walker()
    if root is None:
        return YamlDoc(None, {}, {}, [], [], 0)
    try:
        data = walker.to_python(root, ())
    except _TooBig as e:
        raise YamlInvalid(
            [f"{filename}:{e.line}: the document is too large or nested too deeply (check its anchors and aliases)"]
        ) from None
    except RecursionError:
        raise YamlInvalid([f"{filename}:1: the document is nested too deeply"]) from None
    return YamlDoc(data, walker.lines, walker.key_lines, walker.errors, walker.dropped, root.start_mark.line + 1)


def _decode(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise YamlInvalid(
            [f"{filename}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); "
             f"save the file as UTF-8"]
        ) from None


def load_manifest(text: str | bytes, filename: str = DEFAULT_FILENAME) -> LoadedManifest:
    """Parse and validate a manifest; raise `ManifestInvalid` listing every problem as `FILE:LINE: path: msg`.

    Takes the file's bytes (or text). Never lets a YAML, decoding or pydantic exception through: bad input always
    ends as `ManifestInvalid`, with at most MAX_ERRORS messages, none quoting more than a short preview of a value.
    """
    try:
        doc = parse_yaml(text, filename)
    except YamlInvalid as e:
        raise ManifestInvalid(e.errors) from None
    data = doc.data
    if doc.root_line == 0:
        raise ManifestInvalid(
            [f"{filename}:1: the manifest is empty; expected a mapping with 'version' and 'clusters'"]
        )
    if doc.errors and not isinstance(data, dict):
        raise ManifestInvalid(*capped([_fmt(filename, line, path, msg) for line, path, msg in doc.errors]))
    if not isinstance(data, dict):
        what = "nothing" if data is None else _describe(data)
        raise ManifestInvalid(
            [f"{filename}:{doc.root_line}: the manifest must be a mapping with 'version' and 'clusters', got {what}"]
        )

    found: list[tuple[int, str]] = [(line, _fmt(filename, line, path, msg)) for line, path, msg in doc.errors]
    manifest: Manifest | None = None
    flagged: set[KeyPath] = set()
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as e:
        found += _validation_errors(e, doc, filename, flagged)
    for path, msg in _window_problems(data):
        if path not in flagged:
            line = _line_of(doc.lines, path)
            found.append((line, _fmt(filename, line, path, msg)))
    if found or manifest is None:
        found.sort(key=lambda item: item[0])  # stable: same-line errors keep pydantic's order
        raise ManifestInvalid(*capped(list(dict.fromkeys(message for _, message in found))))

    warnings: list[str] = []
    for i, cluster in enumerate(manifest.clusters):
        if cluster.zato_version not in ("3.2", "3.3"):
            continue
        for j, src in enumerate(cluster.service_sources):
            if src.module is not None:
                path = ("clusters", i, "service_sources", j, "module")
                line = _line_of(doc.lines, path)
                warnings.append(_fmt(filename, line, path, _MODULE_WARNING.format(version=cluster.zato_version)))
    return LoadedManifest(manifest, tuple(warnings), filename, types.MappingProxyType(dict(doc.lines)))


def _validation_errors(e: ValidationError, doc: YamlDoc, filename: str, flagged: set[KeyPath]) -> list[tuple[int, str]]:
    """A pydantic error -> (line, `FILE:LINE: key.path: message`) per problem; `flagged` collects their paths."""
    found: list[tuple[int, str]] = []
    for path, line, msg in explain_validation(e, doc, Manifest):
        flagged.add(path)
        found.append((line, _fmt(filename, line, path, msg)))
    return found


def explain_validation(
    e: ValidationError, doc: YamlDoc | None, model: type[BaseModel]
) -> list[tuple[KeyPath, int, str]]:
    """(key path, line in `doc`, message) per problem of a pydantic error on data read by `parse_yaml`.

    Values quoted in messages are cut to a preview; problems below a value the YAML walker could not read are
    left out (the walker reported them)."""
    found: list[tuple[KeyPath, int, str]] = []
    for err in e.errors(include_url=False):
        for path, msg, use_key_line in _explain(err, model):
            if doc is None:
                found.append((path, 1, msg))
                continue
            if any(path[: len(d)] == d for d in doc.dropped):
                continue
            line = (doc.key_lines.get(path) if use_key_line else None) or _line_of(doc.lines, path)
            found.append((path, line, msg))
    return found


def capped(errors: list[str]) -> tuple[list[str], int]:
    """The first MAX_ERRORS messages (and a line counting the others), with the number of problems."""
    if len(errors) <= MAX_ERRORS:
        return errors, len(errors)
    return [*errors[:MAX_ERRORS], f"... and {len(errors) - MAX_ERRORS:,} more"], len(errors)


def _window_problems(data: dict[str, Any]) -> list[tuple[KeyPath, str]]:
    """Every `clusters[i].rollout.window` whose cron fields are out of range (the model checks only the shape)."""
    found: list[tuple[KeyPath, str]] = []
    clusters = data.get("clusters")
    if not isinstance(clusters, list):
        return found
    for i, cluster in enumerate(clusters):
        rollout = cluster.get("rollout") if isinstance(cluster, dict) else None
        window = rollout.get("window") if isinstance(rollout, dict) else None
        if isinstance(window, str):
            problem = cron_problem(window)
            if problem:
                found.append((("clusters", i, "rollout", "window"), problem))
    return found


#: crontab's five fields: name, lowest, highest, names allowed in place of numbers
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)


def cron_problem(expression: str) -> str | None:
    """Why a 5-field crontab expression (UTC, crontab's day numbers) cannot be used, or None when it can.

    Checked here, where the manifest is read, so `validate` refuses `61 2 * * *` with the file and line instead of
    the scheduler failing at apply time. Items: `*`, `N`, `N-M`, each with an optional `/STEP`, comma-separated;
    months and weekdays also by their three-letter names.
    """
    fields = expression.split()
    if len(fields) != 5:
        return f"must be a 5-field cron expression like '0 2 * * *', got {_preview(expression)}"
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in text.split(","):
            problem = _cron_item(item.lower(), low, high, names)
            if problem:
                return f"cron {name} field {_preview(text)}: {problem} (allowed {low}-{high})"
    return None


def _cron_item(item: str, low: int, high: int, names: tuple[str, ...]) -> str | None:
    span, slash, step = item.partition("/")
    if slash and (not step.isdigit() or int(step) < 1):
        return f"step {_preview(step)} must be a whole number of at least 1"
    if span in ("*", "?"):
        return None
    first, dash, last = span.partition("-")
    bounds: list[int] = []
    for part in (first, last) if dash else (first,):
        if part in names:
            bounds.append(names.index(part) + low)
        elif part.isdigit() and len(part) <= 4:
            bounds.append(int(part))
        else:
            return f"{_preview(part or item)} is not a number{' or a name' if names else ''}"
        if not low <= bounds[-1] <= high:
            return f"{bounds[-1]} is out of range"
    if len(bounds) == 2 and bounds[0] > bounds[1]:
        return f"the range {_preview(span)} runs backwards"
    return None


def _compose(text: str, filename: str) -> yaml.Node | None:
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # the reader checks for unprintable characters already here
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        raise YamlInvalid([_yaml_error(e, filename)]) from None
    except yaml.YAMLError as e:  # ReaderError (a control character) has a position, not a mark
        pos = getattr(e, "position", None)
        line = text.count("\n", 0, pos) + 1 if isinstance(pos, int) else 1
        reason = getattr(e, "reason", None) or str(e)
        raise YamlInvalid([f"{filename}:{line}: {reason}"]) from None
    except RecursionError:
        raise YamlInvalid([f"{filename}:1: the document is nested too deeply"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return root


def _yaml_error(e: yaml.MarkedYAMLError, filename: str) -> str:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark is not None else 1
    problem, context = e.problem, e.context
    if problem and context:
        if problem.startswith("but "):
            message = f"{context}, {problem}"
        else:
            at = ""
            if e.context_mark is not None and e.context_mark.line + 1 != line:
                at = f" at line {e.context_mark.line + 1}"
            message = f"{problem} ({context}{at})"
    else:
        message = problem or context or "invalid YAML"
    return _fmt(filename, line, (), message)


class _TooBig(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Walker:
    """YAML nodes -> plain data, recording lines and reporting duplicate keys and unreadable values."""

    def __init__(self) -> None:
        self.lines: dict[KeyPath, int] = {}
        self.key_lines: dict[KeyPath, int] = {}
        self.errors: list[tuple[int, KeyPath, str]] = []
        #: paths whose value could not be read; pydantic errors below them would only repeat the walker's
        self.dropped: list[KeyPath] = []
        self._constructor = yaml.SafeLoader("")
        self._active: set[int] = set()
        self._count = 0

    def to_python(self, node: yaml.Node, path: KeyPath) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        self._count += 1
        if self._count > _MAX_NODES or len(path) > _MAX_DEPTH:
            raise _TooBig(node.start_mark.line + 1)
        if id(node) in self._active:
            self._fail(node, path, "this value refers to itself (check the YAML anchors and aliases)")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ_TAG:
                    self._fail(node, path, f"unsupported YAML tag {node.tag!r}")
                    return None
                return [self.to_python(item, (*path, i)) for i, item in enumerate(node.value)]
            try:
                return self._constructor.construct_object(node, deep=True)
            except Exception as e:  # PyYAML's constructors raise ValueError, KeyError, AttributeError, ...
                self._fail(node, path, _unreadable(node, e))
                return None
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any] | None:
        if node.tag != _MAP_TAG:
            self._fail(node, path, f"unsupported YAML tag {node.tag!r}")
            return None
        # duplicates among the keys written here; keys merged in with `<<` may be overridden, as YAML intends
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            name: str = key_node.value
            if name in first and len(self.errors) <= MAX_ERRORS:
                self.errors.append(
                    (
                        key_node.start_mark.line + 1,
                        (*path, name),
                        f"duplicate key (first at line {first[name]}); YAML would silently keep the last",
                    )
                )
            else:
                first[name] = key_node.start_mark.line + 1
        try:
            self._constructor.flatten_mapping(node)
        except Exception as e:
            self._fail(node, path, _unreadable(node, e))
            return None
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key: Any = None
            if isinstance(key_node, yaml.ScalarNode):
                try:
                    key = self._constructor.construct_object(key_node, deep=True)
                except Exception:
                    key = None
            if not isinstance(key, str):
                shown = _preview(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "a complex key"
                self.errors.append((line, path, f"keys must be plain names, got {shown}"))
                continue
            child = (*path, key)
            self.key_lines[child] = line
            self.lines[child] = value_node.start_mark.line + 1 if isinstance(value_node, yaml.ScalarNode) else line
            out[key] = self.to_python(value_node, child)
            if child in self.dropped:
                del out[key]
        return out

    def _fail(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        self.errors.append((node.start_mark.line + 1, path, message))
        self.dropped.append(path)


def _line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int:
    while path not in lines:
        if not path:
            return 1
        path = path[:-1]
    return lines[path]


def _fmt(filename: str, line: int, path: KeyPath, message: str) -> str:
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    where = format_key_path(path) if path else ""
    if len(where) > MAX_MESSAGE:
        where = where[: MAX_MESSAGE - 3] + "..."
    return f"{filename}:{line}: {where}: {message}" if path else f"{filename}:{line}: {message}"


def _preview(value: str) -> str:
    """`value` quoted, cut to PREVIEW characters: an error never repeats a large value."""
    if len(value) <= PREVIEW:
        return repr(value)
    return f"{value[:PREVIEW]!r}... ({len(value):,} characters)"


_TAGS = {"tag:yaml.org,2002:int": "whole number", "tag:yaml.org,2002:float": "number",
         "tag:yaml.org,2002:timestamp": "date", "tag:yaml.org,2002:bool": "boolean",
         "tag:yaml.org,2002:binary": "base64 value"}


def _unreadable(node: yaml.Node, e: Exception) -> str:
    """Why PyYAML could not construct `node`'s value, without quoting more than a preview of it."""
    what = _TAGS.get(node.tag, "value")
    shown = _preview(node.value) if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str) else "here"
    if isinstance(e, yaml.YAMLError):
        reason = getattr(e, "problem", None) or type(e).__name__
    elif what == "whole number" and "digits" in str(e):
        reason = "too many digits"
    elif what == "date":
        reason = "no such date" if isinstance(e, ValueError) else "not a date"
    else:
        reason = f"not a valid {what}"
    quote = "; quote it if it is meant as text" if what in ("date", "whole number", "number") else ""
    return f"cannot read the {what} {shown}: {reason}{quote}"


def _explain(err: ErrorDetails, root: type[BaseModel]) -> list[tuple[KeyPath, str, bool]]:
    """One pydantic error -> (key path, message, point at the key rather than the value) per problem in it."""
    loc: KeyPath = tuple(err["loc"])
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    given = err.get("input")
    if kind == "value_error" and isinstance(ctx.get("error"), Problems):
        problems: Problems = ctx["error"]
        return [((*loc, *at), message, False) for at, message in problems.problems]
    if kind == "missing":
        return [(loc, "field required", False)]  # not in the file: line_of gives the mapping that lacks it
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        allowed = ", ".join(model.model_fields) if model is not None else "?"
        return [(loc, f"unknown key; allowed: {allowed}", True)]
    return [(loc, _message(kind, err["msg"], ctx, given), False)]


def _message(kind: str, msg: str, ctx: dict[str, Any], given: Any) -> str:
    got = _describe(given)
    quote = "; quote it" if isinstance(given, bool | int | float) or given is None else ""
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "assertion_error":
        return msg.removeprefix("Assertion failed, ")
    if kind == "string_type":
        return f"expected a string, got {got}{quote if given is not None else ''}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {got}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {got}"
    if kind == "list_type":
        return f"expected a list, got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {got}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', '?')}, got {got}"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == _NAME:
            return f"must start with a letter or digit, then letters, digits, '_', '.' or '-', got {got}"
        return f"must match {ctx.get('pattern')}, got {got}"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must have at least {n} items"
    if kind == "string_too_short":
        return "must not be empty"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("greater than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {words} {bound}, got {got}"
    return msg


def _describe(v: Any) -> str:
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, int | float):
        shown = repr(v)
        return f"the number {shown if len(shown) <= PREVIEW else f'{shown[:20]}... ({len(shown):,} digits)'}"
    if isinstance(v, str):
        return _preview(v)
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    return f"the {type(v).__name__} {_preview(str(v))}"


def _model_at(root: type[BaseModel], path: KeyPath) -> type[BaseModel] | None:
    """The model class that validates the mapping at `path` (for the list of allowed keys)."""
    t: Any = root
    for part in path:
        t = _unwrap_optional(t)
        if isinstance(part, int):
            if typing.get_origin(t) is not list:
                return None
            t = typing.get_args(t)[0]
        elif isinstance(t, type) and issubclass(t, BaseModel) and part in t.model_fields:
            t = t.model_fields[part].annotation
        else:
            return None
    t = _unwrap_optional(t)
    return t if isinstance(t, type) and issubclass(t, BaseModel) else None


def _unwrap_optional(t: Any) -> Any:
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return args[0] if len(args) == 1 else t
    return t
