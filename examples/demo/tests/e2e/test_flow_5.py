"""End-to-end flow 5: slow, waits on a (simulated) service."""

import time

import pytest


@pytest.mark.e2e
def test_flow_5(service):
    time.sleep(0.8)
    assert service["url"].startswith("http")
