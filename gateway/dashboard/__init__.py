"""The built-in A/B dashboard: ``GET /dashboard`` and its JSON API, read from the capture store.

- ``window``: the time window of a view and its chart buckets
- ``queries``: the SQL aggregations over ``calls`` and ``feedback`` (SQLite and PostgreSQL)
- ``rollup``: long windows from the hourly rollup (PostgreSQL), when it exists
- the rollup's tables and triggers live in ``capture.dashboard_rollup`` (migration 0003)
- ``stats``: confidence intervals, Welch's t-test, Mann-Whitney U (standard library only)
- ``report``: query results -> the JSON the page draws
- ``rollouts``: each route's rollout (slices, gates now, the decisions) from the store
- ``savings``: the savings ledger per route and day, the incumbent chosen and priced
- ``access``: the admin key, as a bearer token for the API or a session cookie for the browser
- ``routes``: ``build_dashboard(state)``, the FastAPI router
- ``static/``: the page (HTML, CSS, JS) and the vendored chart library (uPlot)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.dashboard.routes import DashboardState, build_dashboard

__all__ = ["DashboardState", "build_dashboard"]


def __getattr__(name: str) -> Any:
    """The router's names, imported when first asked for: the serving gateway imports
    ``rollup`` (for its minute's fold) at start, FastAPI and the routes only with the app."""
    if name in __all__:
        from gateway.dashboard import routes

        return getattr(routes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
