"""The manifest: YAML in the services repository -> typed model, every error with file:line and key path."""

from reconciler.manifest.loader import LoadedManifest, load_manifest
from reconciler.manifest.model import (
    Cluster,
    ExtraPath,
    HAProxy,
    KeyPath,
    Manifest,
    Problems,
    Rollout,
    Server,
    ServiceSource,
    format_key_path,
)

__all__ = [
    "Cluster",
    "ExtraPath",
    "HAProxy",
    "KeyPath",
    "LoadedManifest",
    "Manifest",
    "Problems",
    "Rollout",
    "Server",
    "ServiceSource",
    "format_key_path",
    "load_manifest",
]
