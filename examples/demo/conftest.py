"""Shared fixtures of the demo suite: a (simulated) service started once per
session, as end-to-end suites do."""

import time

import pytest


@pytest.fixture(scope="session")
def service():
    time.sleep(0.3)  # starting a service
    yield {"url": "http://127.0.0.1:0"}
