"""The manifest: YAML in the services repository -> typed model, every error with file:line and key path."""

from reconciler.manifest.model import Cluster, ExtraPath, HAProxy, Manifest, Rollout, Server, ServiceSource

__all__ = ["Cluster", "ExtraPath", "HAProxy", "Manifest", "Rollout", "Server", "ServiceSource"]
