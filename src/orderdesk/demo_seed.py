"""Seed the demo project, the sample catalog and a key with every scope.

The demo project ships with the simulated fulfilment provider.
"""

from __future__ import annotations

from orderdesk.auth.scopes import ALL_SCOPES
from orderdesk.auth.services import create_api_key, get_or_create_project
from orderdesk.catalog.services import import_rows, sample_catalog_rows
from orderdesk.runtime import Runtime

DEMO_PROJECT = "demo"


def seed_demo(runtime: Runtime) -> str:
    """Create (or refresh) the demo data and return a new key's value."""
    with runtime.session_factory() as session, session.begin():
        project = get_or_create_project(session, runtime.settings, DEMO_PROJECT)
        project.fulfilment_provider = "simulated"
        import_rows(session, sample_catalog_rows())
        _key, value = create_api_key(
            session, project, runtime.settings.environment, list(ALL_SCOPES), "demo"
        )
    return value
