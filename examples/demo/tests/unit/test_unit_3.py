"""Unit tests: quick, CPU-light."""

import time

import pytest


def test_unit_3_0():
    time.sleep(0.053)
    assert 0 + 3 >= 0


def test_unit_3_1():
    time.sleep(0.047)
    assert 1 + 3 >= 0


def test_unit_3_2():
    time.sleep(0.091)
    assert 2 + 3 >= 0


def test_unit_3_3():
    time.sleep(0.208)
    assert 3 + 3 >= 0


def test_unit_3_4():
    time.sleep(0.062)
    assert 4 + 3 >= 0


def test_unit_3_5():
    time.sleep(0.154)
    assert 5 + 3 >= 0


def test_unit_3_6():
    time.sleep(0.167)
    assert 6 + 3 >= 0


def test_unit_3_7():
    time.sleep(0.106)
    assert 7 + 3 >= 0


@pytest.mark.parametrize("value", [1, 2, 3, 5, 8])
def test_parametrized_3(value):
    time.sleep(0.05)
    assert value > 0
