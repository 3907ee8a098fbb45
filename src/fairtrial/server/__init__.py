"""The fairtrial registry: a web application that stores bundles and replication records and
shows leaderboards ranked with intervals, compute and replication counts.

``Registry`` is the store (SQLite file or PostgreSQL URL); ``create_app`` is the FastAPI
application (``fairtrial serve`` runs it with uvicorn); ``client`` pushes bundles and records
to a registry and fetches bundles from one, with the standard library only.
"""

from __future__ import annotations

from fairtrial.server.registry import DEFAULT_REGISTRY, Filters, Registry, badge

__all__ = ["DEFAULT_REGISTRY", "Filters", "Registry", "badge", "create_app"]


def __getattr__(name: str) -> object:
    # the web framework is an optional extra: import it only when the app is asked for
    if name == "create_app":
        from fairtrial.server.app import create_app

        return create_app
    raise AttributeError(name)
