"""Unit tests: quick, CPU-light."""

import time

import pytest


def test_unit_1_0():
    time.sleep(0.029)
    assert 0 + 1 >= 0


def test_unit_1_1():
    time.sleep(0.12)
    assert 1 + 1 >= 0


def test_unit_1_2():
    time.sleep(0.036)
    assert 2 + 1 >= 0


def test_unit_1_3():
    time.sleep(0.041)
    assert 3 + 1 >= 0


def test_unit_1_4():
    time.sleep(0.118)
    assert 4 + 1 >= 0


def test_unit_1_5():
    time.sleep(0.21)
    assert 5 + 1 >= 0


def test_unit_1_6():
    time.sleep(0.048)
    assert 6 + 1 >= 0


def test_unit_1_7():
    time.sleep(0.071)
    assert 7 + 1 >= 0


@pytest.mark.parametrize("value", [1, 2, 3, 5, 8])
def test_parametrized_1(value):
    time.sleep(0.05)
    assert value > 0
