"""End-to-end flow 0: slow, waits on a (simulated) service."""

import time

import pytest


@pytest.mark.e2e
def test_flow_0(service):
    time.sleep(2.5)
    assert service["url"].startswith("http")
