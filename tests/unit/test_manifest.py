"""The manifest loader: valid examples load, and every invalid input ends as `ManifestInvalid` whose lines say
exactly where (file:line: key.path: message), because that text is what a user sees when a push is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.errors import ManifestInvalid
from reconciler.manifest import LoadedManifest, load_manifest
from reconciler.manifest.schema import SCHEMA_PATH, json_schema, render

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"

MINIMAL = (EXAMPLES / "minimal.yaml").read_text()

MODULE_WARNING_32 = (
    "zato-gitops.yaml:{line}: clusters[0].service_sources[0].module: Zato 3.2 resolves service-sources.txt "
    "entries as paths, so a dotted module name will most likely fail to import at start; prefer a directory "
    "(path + target). The log check after the restart decides."
)


def errors_of(text: str, filename: str = "zato-gitops.yaml") -> list[str]:
    with pytest.raises(ManifestInvalid) as info:
        load_manifest(text, filename)
    return info.value.errors


def one_cluster(body: str, version: str = '"3.2"') -> str:
    """A valid one-cluster manifest with `body` (indented 4) appended to the cluster."""
    return (
        "version: 1\n"
        "clusters:\n"
        "  - name: prod\n"
        f"    zato_version: {version}\n"
        "    servers:\n"
        "      - name: server1\n"
        "        path: /srv/zato/server1\n" + body
    )


# --- valid manifests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate(path: Path) -> None:
    loaded = load_manifest(path.read_text(), path.name)
    assert isinstance(loaded, LoadedManifest)
    assert loaded.manifest.clusters


def test_minimal_example_is_the_one_from_the_issue() -> None:
    m = load_manifest(MINIMAL).manifest
    (c,) = m.clusters
    assert (c.name, c.zato_version, c.zato_command) == ("prod", "3.2", "/opt/zato/current/bin/zato")
    assert [s.name for s in c.servers] == ["server1", "server2"]
    assert c.hot_deploy == ["services/*.py"]
    assert load_manifest(MINIMAL).warnings == ()


def test_defaults() -> None:
    text = "version: 1\nclusters:\n  - name: prod\n    servers:\n      - name: s1\n        path: /srv/s1\n"
    c = load_manifest(text).manifest.clusters[0]
    s = c.servers[0]
    assert (s.host, s.port, s.user) == ("localhost", 22, "zato")
    assert c.zato_version == "3.2"
    assert c.transport == "ssh"
    assert c.drift == "heal"
    assert c.hot_deploy == [] and c.service_sources == [] and c.extra_paths == []
    assert c.rollout.max_unavailable == 1 and c.rollout.window is None and c.rollout.haproxy is None
    assert c.extra_paths_dir == "/opt/zato/current/zato_extra_paths"


@pytest.mark.parametrize(("written", "meant"), [("3.2", "3.2"), ("3.3", "3.3"), ("2.0", "2.0"), ("4.1", "4.1")])
def test_unquoted_zato_version(written: str, meant: str) -> None:
    assert load_manifest(one_cluster("", written)).manifest.clusters[0].zato_version == meant


def test_static_example_in_detail() -> None:
    loaded = load_manifest((EXAMPLES / "static.yaml").read_text(), "static.yaml")
    c = loaded.manifest.clusters[0]
    assert [(s.path, s.target, s.module) for s in c.service_sources] == [
        ("static-services", "my-services", None),
        ("billing/invoices.py", "billing/invoices.py", None),
        (None, None, "crm.services"),
    ]
    assert [e.path for e in c.extra_paths] == ["lib/acme_common", "lib/acme_util.py"]
    assert c.rollout.window == "0 2 * * *"
    assert c.rollout.haproxy is not None and c.rollout.haproxy.backend == "bck_http_plain"
    assert loaded.warnings == (
        MODULE_WARNING_32.replace("zato-gitops.yaml", "static.yaml")
        .format(line=29)
        .replace("service_sources[0]", "service_sources[2]"),
    )


def test_line_of() -> None:
    loaded = load_manifest(MINIMAL)
    assert loaded.line_of(("clusters", 0, "hot_deploy", 0)) == 17
    assert loaded.line_of(("clusters", 0, "hot_deploy")) == 16  # a list under a key: the key's line
    assert loaded.line_of(("clusters", 0, "servers", 1)) == 12  # a list item: its `-` line
    assert loaded.line_of(("clusters", 0, "servers", 1, "path")) == 15
    assert loaded.line_of(("clusters", 0, "servers", 1, "port")) == 12  # defaulted: the mapping's line
    assert loaded.line_of(("clusters", 0, "rollout", "window")) == 3  # defaulted: up to the cluster
    assert loaded.line_of(()) == 1
    assert loaded.where(("clusters", 0, "hot_deploy", 0)) == "zato-gitops.yaml:17: clusters[0].hot_deploy[0]"


def test_paths_are_normalised() -> None:
    c = load_manifest(
        one_cluster(
            "    hot_deploy: [./services//*.py]\n"
            "    service_sources: [{path: ./static/, target: ./my-services/}]\n"
            "    extra_paths: [{path: lib/pkg/}]\n"
        )
    ).manifest.clusters[0]
    assert c.hot_deploy == ["services/*.py"]
    assert (c.service_sources[0].path, c.service_sources[0].target) == ("static", "my-services")
    assert c.extra_paths[0].path == "lib/pkg"


def test_yaml_merge_keys_work() -> None:
    text = one_cluster("").replace(
        "      - name: server1\n        path: /srv/zato/server1\n",
        "      - &s1 {name: server1, path: /srv/zato/server1, user: bob}\n"
        "      - {<<: *s1, name: server2, path: /srv/zato/server2}\n",
    )
    servers = load_manifest(text).manifest.clusters[0].servers
    assert [(s.name, s.user) for s in servers] == [("server1", "bob"), ("server2", "bob")]


# --- every problem, with its line --------------------------------------------------------------------------------

BAD = """\
version: 1
clusters:
  - name: prod
    zato_version: "3.1"
    transport: sshh
    servers:
      - name: server1
        host: 10.0.0.11
        port: "22"
        path: /opt/zato/env/prod/server1
      - name: server2
        host: 10.0.0.12
        prot: 22
      - name: server 3
        path: opt/zato/server3
    hot_deploy:
      - services/*.py
      - ""
      - ../other/*.py
      - services/
    rollout:
      window: "0 2 * *"
      haproxy:
        socket: /var/run/haproxy.sock
    confirm_timeout: 0
    drift: heal
    drift: report
"""


def test_bad_manifest_lists_every_problem_with_its_line() -> None:
    assert errors_of(BAD) == [
        "zato-gitops.yaml:4: clusters[0].zato_version: must be '2.0', '3.0', '3.2', '3.3' or '4.1', got '3.1'",
        "zato-gitops.yaml:5: clusters[0].transport: must be 'ssh' or 'local', got 'sshh'",
        "zato-gitops.yaml:9: clusters[0].servers[0].port: expected a whole number, got '22'",
        "zato-gitops.yaml:11: clusters[0].servers[1].path: field required",
        "zato-gitops.yaml:13: clusters[0].servers[1].prot: unknown key; allowed: name, host, port, user, path",
        "zato-gitops.yaml:14: clusters[0].servers[2].name: must start with a letter or digit, then letters, "
        "digits, '_', '.' or '-', got 'server 3'",
        "zato-gitops.yaml:15: clusters[0].servers[2].path: must be an absolute path, got 'opt/zato/server3'",
        "zato-gitops.yaml:18: clusters[0].hot_deploy[1]: must not be empty; give a glob relative to the "
        "repository root",
        "zato-gitops.yaml:19: clusters[0].hot_deploy[2]: must stay inside the repository: no '..' components, "
        "got '../other/*.py'",
        "zato-gitops.yaml:20: clusters[0].hot_deploy[3]: must name .py modules: end the glob in '.py' or '*' "
        "(e.g. 'services/*.py'), got 'services/'",
        "zato-gitops.yaml:22: clusters[0].rollout.window: must be a 5-field cron expression like '0 2 * * *', "
        "got '0 2 * *'",
        "zato-gitops.yaml:23: clusters[0].rollout.haproxy.backend: field required",
        "zato-gitops.yaml:25: clusters[0].confirm_timeout: must be greater than 0, got the number 0",
        "zato-gitops.yaml:27: clusters[0].drift: duplicate key (first at line 26); YAML would silently keep the last",
    ]


def test_message_names_the_file_and_counts() -> None:
    with pytest.raises(ManifestInvalid) as info:
        load_manifest(BAD, "services/zato-gitops.yaml")
    assert str(info.value).startswith("the manifest is invalid (14 errors):\n  services/zato-gitops.yaml:4: ")


def test_unknown_key() -> None:
    assert errors_of(one_cluster("    hot_deplyo:\n      - services/*.py\n")) == [
        "zato-gitops.yaml:8: clusters[0].hot_deplyo: unknown key; allowed: name, zato_version, zato_command, "
        "transport, servers, hot_deploy, service_sources, extra_paths, extra_paths_dir, rollout, drift, "
        "confirm_timeout"
    ]
    assert errors_of("version: 1\nclusters: []\nextra: 1\n")[-1] == (
        "zato-gitops.yaml:3: extra: unknown key; allowed: version, clusters"
    )


def test_missing_field_points_at_the_mapping_that_lacks_it() -> None:
    # the example from the issue: server2 of minimal.yaml without its path
    text = MINIMAL.replace("        path: /opt/zato/env/prod/server2\n", "")
    assert errors_of(text) == ["zato-gitops.yaml:12: clusters[0].servers[1].path: field required"]
    assert errors_of("clusters:\n  - servers: [{name: a, path: /a}]\n") == [
        "zato-gitops.yaml:1: version: field required",
        "zato-gitops.yaml:2: clusters[0].name: field required",
    ]


def test_wrong_types() -> None:
    assert errors_of(one_cluster("    rollout: 5\n    hot_deploy: services/*.py\n", "3")) == [
        "zato-gitops.yaml:4: clusters[0].zato_version: must be '2.0', '3.0', '3.2', '3.3' or '4.1', got the number 3",
        "zato-gitops.yaml:8: clusters[0].rollout: expected a mapping, got the number 5",
        "zato-gitops.yaml:9: clusters[0].hot_deploy: expected a list, got 'services/*.py'",
    ]
    assert errors_of("version: true\nclusters:\n  - name: 2024\n    servers: [{name: a, path: /a, port: yes}]\n") == [
        "zato-gitops.yaml:1: version: must be 1 (the manifest format version), got true",
        "zato-gitops.yaml:3: clusters[0].name: expected a string, got the number 2024; quote it",
        "zato-gitops.yaml:4: clusters[0].servers[0].port: expected a whole number, got the boolean true",
    ]


def test_duplicate_yaml_key() -> None:
    assert errors_of(MINIMAL.replace("        port: 22\n", "        port: 22\n        port: 2222\n")) == [
        "zato-gitops.yaml:10: clusters[0].servers[0].port: duplicate key (first at line 9); YAML would silently "
        "keep the last"
    ]


def test_yaml_syntax_error_line() -> None:
    text = MINIMAL.replace("      - services/*.py\n", "      - [services/*.py\n")
    assert errors_of(text) == [
        "zato-gitops.yaml:18: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence at line 17)"
    ]
    bad_indent = MINIMAL.replace(
        "        user: zato\n        path: /opt/zato/env/prod/server2", "        user: zato\n       path: /x"
    )
    assert errors_of(bad_indent) == [
        "zato-gitops.yaml:15: expected <block end>, but found '<block mapping start>' (while parsing a block "
        "collection at line 7)"
    ]
    assert errors_of("version: 1\n---\nversion: 1\n") == [
        "zato-gitops.yaml:2: expected a single document in the stream, but found another document"
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "zato-gitops.yaml:1: the manifest is empty; expected a mapping with 'version' and 'clusters'"),
        (
            "# only a comment\n",
            "zato-gitops.yaml:1: the manifest is empty; expected a mapping with 'version' and 'clusters'",
        ),
        ("- a\n- b\n", "zato-gitops.yaml:1: the manifest must be a mapping with 'version' and 'clusters', got a list"),
        (
            "\n\nhello\n",
            "zato-gitops.yaml:3: the manifest must be a mapping with 'version' and 'clusters', got 'hello'",
        ),
        ("version: 1\x07\n", "zato-gitops.yaml:1: special characters are not allowed"),
        (
            "version: !!python/object/apply:os.system ['true']\nclusters: []\n",
            "zato-gitops.yaml:1: version: unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        (
            "version: 1\nclusters: &a\n  - *a\n",
            "zato-gitops.yaml:2: clusters[0]: this value refers to itself (check the YAML anchors and aliases)",
        ),
        ("a: " + "[" * 3000 + "]" * 3000 + "\n", "zato-gitops.yaml:1: the document is nested too deeply"),
    ],
)
def test_never_a_traceback(text: str, error: str) -> None:
    assert errors_of(text)[0] == error


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    assert errors_of("\n".join(lines) + "\n") == [
        "zato-gitops.yaml:1: the document is too large or nested too deeply (check its anchors and aliases)"
    ]


# --- rules across fields -----------------------------------------------------------------------------------------


def test_duplicate_server_names_and_places() -> None:
    text = (
        MINIMAL.replace("name: server2", "name: server1")
        .replace("10.0.0.12", "10.0.0.11")
        .replace("prod/server2", "prod/server1")
    )
    assert errors_of(text) == [
        "zato-gitops.yaml:12: clusters[0].servers[1].name: server name 'server1' is used twice in cluster 'prod'",
        "zato-gitops.yaml:12: clusters[0].servers[1]: same host, port and path as servers[0]: both entries are "
        "one server directory",
    ]


def test_local_transport_same_path_is_one_server() -> None:
    text = one_cluster("      - {name: server2, host: other, path: /srv/zato/server1/}\n    transport: local\n")
    assert errors_of(text) == [
        "zato-gitops.yaml:8: clusters[0].servers[1]: same path as servers[0]: both entries are one server directory"
    ]


def test_duplicate_cluster_names() -> None:
    text = MINIMAL + "  - name: prod\n    servers: [{name: s, path: /srv/s}]\n"
    assert errors_of(text) == ["zato-gitops.yaml:18: clusters[1].name: cluster name 'prod' is used twice"]


def test_zato_41_refuses_service_sources() -> None:
    text = one_cluster("    service_sources:\n      - path: static\n        target: my-services\n", '"4.1"')
    assert errors_of(text) == [
        "zato-gitops.yaml:8: clusters[0].service_sources: service_sources is not supported by zato_version 4.1 "
        "(4.1 has no service-sources.txt); use hot_deploy, or extra_paths for code that is not a service"
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            "    hot_deploy: [/srv/services/*.py]\n",
            "clusters[0].hot_deploy[0]: must be relative to the repository root, not absolute, got "
            "'/srv/services/*.py'",
        ),
        (
            "    hot_deploy: [services/../../x.py]\n",
            "clusters[0].hot_deploy[0]: must stay inside the repository: no '..' components, got 'services/../../x.py'",
        ),
        (
            "    service_sources: [{path: ../outside, target: my-services}]\n",
            "clusters[0].service_sources[0].path: must stay inside the repository: no '..' components, got "
            "'../outside'",
        ),
        (
            "    service_sources: [{path: /etc, target: my-services}]\n",
            "clusters[0].service_sources[0].path: must be relative to the repository root, not absolute, got '/etc'",
        ),
        (
            "    extra_paths: [{path: lib/../../x}]\n",
            "clusters[0].extra_paths[0].path: must stay inside the repository: no '..' components, got 'lib/../../x'",
        ),
        (
            "    extra_paths: [{path: /usr/lib/x}]\n",
            "clusters[0].extra_paths[0].path: must be relative to the repository root, not absolute, got '/usr/lib/x'",
        ),
        (
            "    service_sources: [{path: static, target: a/../../x}]\n",
            "clusters[0].service_sources[0].target: must stay inside the server directory, got 'a/../../x'; use an "
            "absolute path for a folder outside it",
        ),
        (
            "    service_sources: [{path: static, target: ./}]\n",
            "clusters[0].service_sources[0].target: must not be the server directory itself ('./'): its *.py files "
            "would be imported and the reconciler would manage Zato's own files; name a folder such as "
            "'my-services'",
        ),
        (
            "    service_sources: [{path: static, target: pickup/incoming/services}]\n",
            "clusters[0].service_sources[0].target: must not be inside the server's pickup/ folder "
            "('pickup/incoming/services'): pickup/ belongs to Zato (the hot-deploy pickup dir: whatever lands there "
            "is hot-deployed)",
        ),
        (
            "    service_sources: [{path: static, target: ./work/hot-deploy/current}]\n",
            "clusters[0].service_sources[0].target: must not be inside the server's work/ folder "
            "('./work/hot-deploy/current'): work/ belongs to Zato (work/hot-deploy/current is rewritten by every "
            "hot-deploy)",
        ),
        (
            "    service_sources: [{path: static, target: /srv/zato/server1/config/repo}]\n",
            "clusters[0].service_sources[0].target: must not be inside the server's config/ folder "
            "('/srv/zato/server1/config/repo'): config/ belongs to Zato (its configuration, including "
            "service-sources.txt itself) (inside server 'server1')",
        ),
    ],
)
def test_path_escapes_refused(body: str, error: str) -> None:
    assert errors_of(one_cluster(body)) == [f"zato-gitops.yaml:8: {error}"]


def test_service_sources_rules() -> None:
    text = one_cluster(
        "    service_sources:\n"
        "      - {path: a, target: my-services}\n"  # 9
        "      - {path: b, target: ./my-services/}\n"  # 10
        "      - {path: c.py, target: c}\n"  # 11
        "      - {module: x.y, path: z}\n"  # 12
        "      - {target: t}\n"  # 13
        "      - {path: d, target: '#d'}\n"  # 14
        "    hot_deploy: ['']\n"  # 15
    )
    assert errors_of(text) == [
        "zato-gitops.yaml:11: clusters[0].service_sources[2].target: must end in '.py' when `path` is a .py file: "
        "Zato imports an entry as a file only when it ends in '.py', got 'c'",
        "zato-gitops.yaml:12: clusters[0].service_sources[3]: give either `module`, or `path` with `target`, not both",
        "zato-gitops.yaml:13: clusters[0].service_sources[4]: give `path` and `target` (a repository folder and "
        "where it goes), or `module`",
        "zato-gitops.yaml:14: clusters[0].service_sources[5].target: must not start with '#': "
        "service-sources.txt would skip it as a comment, got '#d'",
        "zato-gitops.yaml:15: clusters[0].hot_deploy[0]: must not be empty; give a glob relative to the "
        "repository root",
    ]
    same_target = one_cluster(
        "    service_sources:\n      - {path: a, target: my-services}\n      - {path: b, target: ./my-services/}\n"
    )
    assert errors_of(same_target) == [
        "zato-gitops.yaml:10: clusters[0].service_sources[1].target: 'my-services' is already the target of "
        "service_sources[0]; each entry must be unique"
    ]


def test_extra_paths_names_must_differ() -> None:
    text = one_cluster("    extra_paths:\n      - path: a/lib\n      - path: b/lib/\n")
    assert errors_of(text) == [
        "zato-gitops.yaml:10: clusters[0].extra_paths[1].path: 'b/lib' would be installed as "
        "/opt/zato/current/zato_extra_paths/lib, like extra_paths[0]; give them different names"
    ]


# --- warnings ----------------------------------------------------------------------------------------------------


def test_module_warning_on_32_not_on_20() -> None:
    body = "    service_sources:\n      - module: crm.services\n"
    assert load_manifest(one_cluster(body, '"3.2"')).warnings == (MODULE_WARNING_32.format(line=9),)
    assert load_manifest(one_cluster(body, "3.3")).warnings == (
        MODULE_WARNING_32.format(line=9).replace("Zato 3.2", "Zato 3.3"),
    )
    assert load_manifest(one_cluster(body, '"2.0"')).warnings == ()
    assert load_manifest(one_cluster(body, '"3.0"')).warnings == ()


# --- JSON Schema -------------------------------------------------------------------------------------------------


def test_schema_file_is_up_to_date() -> None:
    assert SCHEMA_PATH.read_text() == render(), "regenerate it: python -m reconciler.manifest.schema"


def test_schema_accepts_the_examples() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "$id" not in schema
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in sorted(EXAMPLES.glob("*.yaml")):
        jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(one_cluster("", "3.2")))
    assert json.loads(SCHEMA_PATH.read_text()) == schema
