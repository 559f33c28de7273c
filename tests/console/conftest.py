"""Fixtures of the console tests: users of both roles and logged-in clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.console import helpers

from orderdesk.runtime import Runtime

ClientMaker = Callable[[], TestClient]


@pytest.fixture
def new_client(app: FastAPI, client: TestClient) -> Iterator[ClientMaker]:
    """Make more clients of the running app, each with its own cookies."""
    made: list[TestClient] = []

    def make() -> TestClient:
        extra = TestClient(app, raise_server_exceptions=False)
        made.append(extra)
        return extra

    yield make
    for extra in made:
        extra.close()


@pytest.fixture
def operator_client(runtime: Runtime, client: TestClient) -> TestClient:
    """The default client, logged in as a user with the operator role."""
    helpers.add_user(runtime, helpers.OPERATOR, "operator")
    response = helpers.log_in(client, helpers.OPERATOR)
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
def viewer_client(runtime: Runtime, new_client: ClientMaker) -> TestClient:
    """Another client, logged in as a user with the viewer role."""
    helpers.add_user(runtime, helpers.VIEWER, "viewer")
    viewer = new_client()
    response = helpers.log_in(viewer, helpers.VIEWER)
    assert response.status_code == 303, response.text
    return viewer
