"""End-to-end flow 2: slow, waits on a (simulated) service."""

import time

import pytest


@pytest.mark.e2e
def test_flow_2(service):
    time.sleep(1.6)
    assert service["url"].startswith("http")
