"""Modules imported on first use: for what most cold starts never need.

The request models (``payloads.py``) bring pydantic, about 70 ms of every cold start's import;
the authorizer, the event handlers and the routes without a body never use them.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class Deferred(ModuleType):
    """The module ``name``, imported when one of its attributes is first read.

    Not ``importlib.util.LazyLoader``: before Python 3.12 two threads reading its first
    attribute at once (the local API server's) can see the module half executed. This reads
    through ``import_module``, whose per-module lock lets one thread import and the other wait.
    """

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attribute)
