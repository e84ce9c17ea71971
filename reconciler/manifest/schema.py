"""The manifest's JSON Schema, generated from the pydantic model so the two can never disagree.

Editors (VS Code's YAML extension, JetBrains) validate and complete zato-gitops.yaml against it with a
`# yaml-language-server: $schema=...` line. It is a generated file kept in the repository
(manifests/zato-gitops.schema.json); a unit test fails when the model changed and the file was not regenerated:

    python -m reconciler.manifest.schema

The schema checks shapes only: line numbers, duplicate keys and the cross-field rules (unique names, paths that
must stay inside the repository or server directory) come from `load_manifest`, which remains the authority.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from reconciler.manifest.model import Manifest

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "manifests" / "zato-gitops.schema.json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12, as pydantic emits it) of zato-gitops.yaml; no `$id`."""
    schema = Manifest.model_json_schema(mode="validation")
    # the model takes an unquoted `zato_version: 3.2` (a YAML float) too; say so, or editors would flag it
    version = schema["$defs"]["Cluster"]["properties"]["zato_version"]
    version.pop("type", None)
    version["enum"] = [*version["enum"], *(float(v) for v in version["enum"])]
    return {
        "$schema": _DIALECT,
        "title": "zato-gitops manifest (zato-gitops.yaml)",
        **{k: v for k, v in schema.items() if k != "title"},
        "description": "The desired state of Zato servers: what each cluster runs, and how changes are released. "
        "Reference: manifests/README.md.",
    }


def render() -> str:
    """The schema file's exact text (stable key order, trailing newline) so the up-to-date test is byte-exact."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the schema to manifests/zato-gitops.schema.json, or to the path given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else SCHEMA_PATH
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
