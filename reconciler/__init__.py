"""zato-gitops: a GitOps reconciler for Zato.

A git repository holds the desired state (service modules and a YAML manifest); the reconciler observes every
Zato server over SSH (or locally), plans the difference as plain data, applies it the way Zato installs services,
and records what it did as git notes on the applied commit.
"""

__version__ = "0.1.0"
