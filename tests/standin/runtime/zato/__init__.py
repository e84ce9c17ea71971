"""Stub of the `zato` package: just enough for service modules to `from zato.server.service import Service`."""
