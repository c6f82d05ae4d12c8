"""Domains: data + reward behind one small interface (see `base.py`). Every module in this package registers its
domain kinds in `DOMAINS` on import; `build_domain` imports them all once, so adding a domain is adding a module."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from mgs.domains.base import DOMAINS, Domain, Message, RewardResult, Sample

__all__ = ["DOMAINS", "Domain", "Message", "RewardResult", "Sample", "build_domain", "load_builtin_domains"]

_loaded = False


def load_builtin_domains() -> None:
    """Import every submodule of `mgs.domains` so that their `@DOMAINS.register(...)` lines run."""
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def build_domain(kind: str, name: str | None = None, **params: Any) -> Domain:
    """Construct the domain registered as `kind`; `name` (default: `kind`) is how metrics and batches call it."""
    load_builtin_domains()
    return DOMAINS.get(kind)(name=name or kind, **params)
