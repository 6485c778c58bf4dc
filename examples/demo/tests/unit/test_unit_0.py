"""Unit tests: quick, CPU-light."""

import time

import pytest


def test_unit_0_0():
    time.sleep(0.094)
    assert 0 + 0 >= 0


def test_unit_0_1():
    time.sleep(0.055)
    assert 1 + 0 >= 0


def test_unit_0_2():
    time.sleep(0.17)
    assert 2 + 0 >= 0


def test_unit_0_3():
    time.sleep(0.037)
    assert 3 + 0 >= 0


def test_unit_0_4():
    time.sleep(0.143)
    assert 4 + 0 >= 0


def test_unit_0_5():
    time.sleep(0.104)
    assert 5 + 0 >= 0


def test_unit_0_6():
    time.sleep(0.033)
    assert 6 + 0 >= 0


def test_unit_0_7():
    time.sleep(0.137)
    assert 7 + 0 >= 0


@pytest.mark.parametrize("value", [1, 2, 3, 5, 8])
def test_parametrized_0(value):
    time.sleep(0.05)
    assert value > 0
