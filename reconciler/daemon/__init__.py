"""`zato-gitops run`: the reconcile loop, its conditions, HTTP endpoint, metrics, notifications and log setup."""
