"""IB's "no value" numbers become None wherever gateway numbers are read (lib/ib_values.py)."""
from __future__ import annotations

import math
import sys

import pytest

from lib.ib_values import UNSET_DOUBLE, number, price


def test_unset_double_is_the_official_clients_marker():
    assert UNSET_DOUBLE == sys.float_info.max == 1.7976931348623157e308


@pytest.mark.parametrize('value', [None, math.nan, math.inf, -math.inf, UNSET_DOUBLE, -UNSET_DOUBLE,
                                   '1.7976931348623157E308', '', 'n/a', object()])
def test_no_value_is_none(value):
    assert number(value) is None
    assert price(value) is None


def test_numbers_keep_their_value_and_type_and_text_is_read():
    assert number(3) == 3 and isinstance(number(3), int)
    assert number(-2.5) == -2.5
    assert number('12.75') == 12.75
    assert number(0.0) == 0.0


@pytest.mark.parametrize(('value', 'expected'), [(0, None), (-1.0, None), (101.25, 101.25), (7, 7.0)])
def test_a_price_is_above_zero(value, expected):
    assert price(value) == expected
    assert expected is None or isinstance(price(value), float)
