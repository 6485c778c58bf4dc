"""End-to-end flow 3: slow, waits on a (simulated) service."""

import time

import pytest


@pytest.mark.e2e
def test_flow_3(service):
    time.sleep(1.2)
    assert service["url"].startswith("http")
