"""Source name -> connector.  A new archive is one module with a `Connector` subclass and a line here."""
from __future__ import annotations

from bestiary.connectors.base import Connector

_REGISTRY: dict[str, Connector] = {}


def register(connector: Connector) -> Connector:
    _REGISTRY[connector.name] = connector
    return connector


def _load() -> None:
    if _REGISTRY:
        return
    from bestiary.connectors import files, gbif, inat_open_data, inaturalist, macaulay, xenocanto
    for module in (xenocanto, inaturalist, macaulay, gbif, inat_open_data, files):
        for c in module.CONNECTORS:
            register(c)


def get(name: str) -> Connector:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown source {name!r} (known: {', '.join(names())})") from None


def names() -> list[str]:
    _load()
    return list(_REGISTRY)


def code_of(source: str) -> str:
    """The short code a source's sample keys start with (unknown sources keep their name)."""
    _load()
    c = _REGISTRY.get(source)
    return c.code if c else source


def priority_of(source: str) -> int:
    _load()
    c = _REGISTRY.get(source)
    return c.priority if c else 9
