"""End-to-end flow 1: slow, waits on a (simulated) service."""

import time

import pytest


@pytest.mark.e2e
def test_flow_1(service):
    time.sleep(2.0)
    assert service["url"].startswith("http")
