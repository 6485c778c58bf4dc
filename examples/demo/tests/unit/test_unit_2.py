"""Unit tests: quick, CPU-light."""

import time

import pytest


def test_unit_2_0():
    time.sleep(0.164)
    assert 0 + 2 >= 0


def test_unit_2_1():
    time.sleep(0.238)
    assert 1 + 2 >= 0


def test_unit_2_2():
    time.sleep(0.153)
    assert 2 + 2 >= 0


def test_unit_2_3():
    time.sleep(0.111)
    assert 3 + 2 >= 0


def test_unit_2_4():
    time.sleep(0.245)
    assert 4 + 2 >= 0


def test_unit_2_5():
    time.sleep(0.031)
    assert 5 + 2 >= 0


def test_unit_2_6():
    time.sleep(0.217)
    assert 6 + 2 >= 0


def test_unit_2_7():
    time.sleep(0.087)
    assert 7 + 2 >= 0


@pytest.mark.parametrize("value", [1, 2, 3, 5, 8])
def test_parametrized_2(value):
    time.sleep(0.05)
    assert value > 0
