"""End-to-end flow 4: slow, waits on a (simulated) service."""

import time

import pytest


@pytest.mark.e2e
def test_flow_4(service):
    time.sleep(1.0)
    assert service["url"].startswith("http")
