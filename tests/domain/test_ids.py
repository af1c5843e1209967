"""Numbers from outside: what counts as a whole number and as an id (a positive signed 64-bit integer)."""

from __future__ import annotations

import pytest

from sidecar.domain.ids import MAX_ID, is_id, whole_number


@pytest.mark.parametrize(("raw", "expected"), [
    (7, 7),
    (-7, -7),
    (2**70, 2**70),               # an int stays what it is; is_id judges its range
    (True, None),                 # JSON true is not 1
    (3.0, 3),
    (3.5, None),
    (float("nan"), None),
    (float("inf"), None),
    ("42", 42),
    (" 42 ", 42),
    ("+42", 42),
    ("-42", -42),
    ("1" * 40, int("1" * 40)),
    ("1" * 41, None),             # longer than any id: refused before int() is asked to parse it
    ("", None),
    ("-", None),
    ("1e308", None),
    ("0x10", None),
    ("1_000", None),
    ("²", None),
    ("٣", None),
    (None, None),
    ([1], None),
])
def test_whole_number(raw, expected):
    assert whole_number(raw) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (None, False), (0, False), (-1, False), (1, True), (MAX_ID, True), (MAX_ID + 1, False), (2**70, False),
])
def test_an_id_is_positive_and_fits_a_signed_64_bit_column(value, expected):
    assert is_id(value) is expected

