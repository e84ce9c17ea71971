"""Stub of `zato.server` for the stand-in (see zato/server/service.py)."""
