"""The Zato services a module defines, computed from its source with `ast`: the user's code is never imported.

A pull request comment that says "changes `services/crm.py`" tells a reviewer little; one that says "adds
`crm.get-customer`, removes `crm.delete-customer`" is what a Zato person reads. Importing the module to ask Zato
would run code from a branch nobody has reviewed yet, on the reconciler's machine, with its keys: so we parse it
and apply Zato's own naming rules, read from `zato.server.service.Service.get_name` (support/3.2):

- a class is deployed as a service when it derives from Zato's `Service` (or another class of Zato's service
  module, or a service class defined earlier in the same module), is defined in that module at module level
  (also inside `if`, `try` and `with` blocks; imported classes are skipped) and has no `zato_dont_import`
  attribute (own or inherited);
- its name is its `name` attribute when that is set (inherited from a base class too, as `getattr` does), else
  the implementation name `<module>.<ClassName>` uncamelified: a `-` is put before every capital that follows a
  lower-case letter or starts a capitalised word, everything is lower-cased, `_` becomes `-` in the module part,
  and a leading `-` of the class part is dropped. `my_mod.py` with `class GetCustomer` gives `my-mod.get-customer`.

A `name` that is not a literal string (computed at import) cannot be known without running the code: such a
service is reported with `name=None` and the class name, so the plan says it could not tell.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

#: Zato's own pattern (zato.common.util.api._uncamelify_re)
_UNCAMELIFY = re.compile(r"((?<=[a-z])[A-Z]|(?<!\A)[A-Z](?=[a-z]))")
_DONT_IMPORT = "zato_dont_import"
_ZATO_SERVICE_MODULES = ("zato.server.service",)


@dataclass(frozen=True)
class ServiceDef:
    """One service a module defines: its Zato name (None when it is computed at import) and where."""

    name: str | None
    class_name: str
    line: int
    #: the class's code without positions (`ast.dump`): equal fingerprints mean the service did not change
    fingerprint: str = ""


def uncamelify(text: str) -> str:
    """Zato's `uncamelify(s, separator='-', elem_func=lower)`."""
    return "-".join(part.lower() for part in _UNCAMELIFY.sub(r" \1", text).split())


def convert_impl_name(impl_name: str) -> str:
    """Zato's `Service.convert_impl_name`: `my_mod.GetCustomer` -> `my-mod.get-customer`."""
    split = uncamelify(impl_name).split(".")
    path, class_name = [p.replace("_", "-") for p in split[:-1]], split[-1]
    class_name = class_name[1:] if class_name.startswith("-") else class_name
    class_name = class_name.replace(".-", ".").replace("_-", "_")
    return f"{'.'.join(path)}.{class_name}"


def module_name(file_name: str) -> str:
    """The module name Zato imports a hot-deployed file under: its file name without `.py`."""
    base = file_name.rsplit("/", 1)[-1]
    return base[:-3] if base.endswith(".py") else base


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        dotted = _base_name(node.value)
        return f"{dotted}.{node.attr}" if dotted else node.attr
    if isinstance(node, ast.Subscript):  # Service[...] generics, should anyone write them
        return _base_name(node.value)
    return None


_UNKNOWN = object()


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run at import and bind module attributes: the body, and the bodies of its `if`, `try` and
    `with` blocks (a class defined there is a module attribute too, which is what Zato scans)."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            out += _module_level(node.body) + _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            out += _module_level(node.body) + [s for h in node.handlers for s in _module_level(h.body)]
            out += _module_level(node.orelse) + _module_level(node.finalbody)
        elif isinstance(node, ast.With):
            out += _module_level(node.body)
    return out


def _class_attrs(cls: ast.ClassDef) -> dict[str, object]:
    """Attributes assigned in the class body: a literal's value, or `_UNKNOWN` for anything computed."""
    attrs: dict[str, object] = {}
    for stmt in cls.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        for t in targets:
            if isinstance(t, ast.Name) and value is not None:
                attrs[t.id] = value.value if isinstance(value, ast.Constant) else _UNKNOWN
    return attrs


def services_in(source: str | bytes, file_name: str) -> list[ServiceDef]:
    """The services `file_name` (a hot-deployed module) defines, in source order.

    Raises SyntaxError (and ValueError for null bytes) like `compile`: the caller reports modules that do not
    compile on their own."""
    tree = ast.parse(source, filename=file_name)
    zato_names: set[str] = {"Service"}  # a bare `Service` base is Zato's, as in every example
    zato_modules: set[str] = set()
    for node in _module_level(tree.body):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(_ZATO_SERVICE_MODULES):
            zato_names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(_ZATO_SERVICE_MODULES):
                    zato_modules.add(a.asname or a.name)
    mod = module_name(file_name)
    local: dict[str, dict[str, object]] = {}  # service classes seen so far -> their effective attributes
    found: list[ServiceDef] = []
    for node in _module_level(tree.body):
        if not isinstance(node, ast.ClassDef):
            continue
        inherited: dict[str, object] = {}
        is_service = False
        for b in node.bases:
            name = _base_name(b)
            if name is None:
                continue
            if name in local:
                is_service = True
                inherited = local[name] | inherited  # the first base wins, as in the MRO
            elif name in zato_names or any(name.startswith(f"{m}.") for m in zato_modules):
                is_service = True
        if not is_service:
            continue
        attrs = inherited | _class_attrs(node)
        local[node.name] = attrs
        if _DONT_IMPORT in attrs:  # Zato checks hasattr: any value, even False, keeps it out
            continue
        name_attr = attrs.get("name")
        fingerprint = ast.dump(node)
        if name_attr is _UNKNOWN:
            found.append(ServiceDef(None, node.name, node.lineno, fingerprint))
        elif isinstance(name_attr, str) and name_attr:
            found.append(ServiceDef(name_attr, node.name, node.lineno, fingerprint))
        else:
            found.append(ServiceDef(convert_impl_name(f"{mod}.{node.name}"), node.name, node.lineno, fingerprint))
    return found


def display_name(service: ServiceDef, file_name: str) -> str:
    """The name to show: Zato's, or `<module>.<ClassName> (name computed at import)` when it cannot be known."""
    if service.name is not None:
        return service.name
    return f"{module_name(file_name)}.{service.class_name} (name computed at import)"


def service_names(source: str | bytes, file_name: str) -> tuple[str, ...]:
    """Sorted names of the services a module defines."""
    return tuple(sorted(display_name(s, file_name) for s in services_in(source, file_name)))
