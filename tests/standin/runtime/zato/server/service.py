"""Stub of `zato.server.service`: the base class user services subclass.

The stand-in server finds services by looking for subclasses of this `Service` defined in a module, exactly like
Zato does with its own class; nothing else of Zato's service API is needed to deploy, so nothing else is here
beyond a few attributes a typical `handle()` touches.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace


class Service:
    """Base class of every Zato service. Set `name` on a subclass to override the name derived from the class."""

    name: str | None = None

    def __init__(self) -> None:
        self.logger = logging.getLogger(type(self).__module__)
        self.request = SimpleNamespace(payload=None, raw_request=b"", input={})
        self.response = SimpleNamespace(payload="")

    def handle(self) -> None:
        """Overridden by every real service."""
