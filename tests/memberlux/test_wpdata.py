from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from sidecar.memberlux.wpdata import (
    WpDataError,
    capabilities,
    is_serialized,
    maybe_unserialize,
    php_truthy,
    php_unserialize,
    site_timezone,
)

# --- php_unserialize ------------------------------------------------------------------------------


def test_unserialize_nested_array_decodes_strings_and_keeps_maps():
    raw = 'a:2:{s:7:"letters";a:1:{s:5:"title";s:5:"Hello";}s:4:"mblp";a:1:{s:15:"auto_activation";s:2:"on";}}'
    assert php_unserialize(raw) == {"letters": {"title": "Hello"}, "mblp": {"auto_activation": "on"}}


def test_unserialize_list_shaped_array_becomes_list():
    assert php_unserialize('a:2:{i:0;s:6:"12_1_3";i:1;s:6:"12_2_1";}') == ["12_1_3", "12_2_1"]


def test_unserialize_array_with_gaps_or_string_keys_stays_dict():
    assert php_unserialize('a:2:{i:0;s:1:"a";i:2;s:1:"b";}') == {0: "a", 2: "b"}
    assert php_unserialize('a:1:{i:1;s:1:"a";}') == {1: "a"}


def test_unserialize_empty_array_is_empty_dict():
    assert php_unserialize("a:0:{}") == {}


def test_unserialize_counts_utf8_bytes_like_php():
    # "Привет" is 12 bytes in UTF-8: PHP writes byte lengths.
    assert php_unserialize('s:12:"Привет";') == "Привет"
    assert php_unserialize('s:12:"Привет";'.encode()) == "Привет"


def test_unserialize_scalars():
    assert php_unserialize("b:1;") is True
    assert php_unserialize("i:-42;") == -42
    assert php_unserialize("d:5.5;") == 5.5
    assert php_unserialize("N;") is None


def test_unserialize_php_object_becomes_dict_of_properties():
    raw = 'O:8:"stdClass":1:{s:4:"type";s:14:"fullpackaccess";}'
    assert php_unserialize(raw) == {"type": "fullpackaccess"}


@pytest.mark.parametrize("empty", [None, "", b"", "   "])
def test_unserialize_empty_input_returns_default(empty):
    assert php_unserialize(empty) is None
    assert php_unserialize(empty, default={}) == {}


@pytest.mark.parametrize(
    "malformed",
    [
        's:10:"short";',  # declared length does not match
        'a:2:{s:1:"a";s:1:"b";',  # truncated
        "x:1;",  # unknown type
        'a:1:{s:1:"a"}',  # value missing
    ],
)
def test_unserialize_malformed_raises_with_reason(malformed):
    with pytest.raises(WpDataError, match="malformed PHP-serialized data"):
        php_unserialize(malformed)


def test_unserialize_invalid_utf8_inside_a_string_does_not_fail():
    assert php_unserialize(b's:2:"\xff\xfe";') == "\ufffd\ufffd"


# --- maybe_unserialize / is_serialized ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("N;", True), ("b:0;", True), ("i:5;", True), ("d:0.5;", True), ('s:1:"a";', True),
        ("a:0:{}", True), ('O:8:"stdClass":0:{}', True), (" a:0:{} ", True),
        ("hello", False), ("", False), ("a:0:", False), ("i:x;", False), ("12", False),
        ('s:1:"a"', False), (None, False), (5, False),
    ],
)
def test_is_serialized_follows_wordpress(value, expected):
    assert is_serialized(value) is expected


def test_maybe_unserialize_leaves_plain_values_alone():
    assert maybe_unserialize("Europe/Moscow") == "Europe/Moscow"
    assert maybe_unserialize("3") == "3"
    assert maybe_unserialize(None) is None
    assert maybe_unserialize(7) == 7


def test_maybe_unserialize_decodes_serialized():
    assert maybe_unserialize('a:1:{s:13:"administrator";b:1;}') == {"administrator": True}


def test_maybe_unserialize_raises_on_malformed_serialized_looking_value():
    with pytest.raises(WpDataError):
        maybe_unserialize('a:1:{s:99:"administrator";b:1;}')


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False), ("", False), ("yes", True),
                                             (True, True), (False, False), (0, False), (None, False),
                                             (0.0, False), ([], False), ({"a": 1}, True)])
def test_php_truthy(value, expected):
    assert php_truthy(value) is expected


# --- capabilities -----------------------------------------------------------------------------------


def test_capabilities_returns_role_names():
    raw = 'a:2:{s:13:"administrator";b:1;s:8:"customer";b:1;}'
    assert capabilities(raw) == {"administrator", "customer"}


def test_capabilities_keeps_keys_whatever_the_value_like_wordpress():
    assert capabilities('a:1:{s:5:"coach";b:0;}') == {"coach"}


@pytest.mark.parametrize("raw", [None, "", "administrator", 'a:1:{s:99:"x";b:1;}', 'a:1:{i:0;s:5:"admin";}', "i:1;"])
def test_capabilities_malformed_or_odd_gives_no_roles(raw):
    assert capabilities(raw) == set()


# --- site_timezone ------------------------------------------------------------------------------------


def test_timezone_string_wins():
    result = site_timezone("Europe/Moscow", "5")
    assert result.tz == ZoneInfo("Europe/Moscow")
    assert (result.source, result.warning) == ("timezone_string", None)


@pytest.mark.parametrize(
    "offset, minutes",
    [("3", 180), ("5.5", 330), ("-3.75", -225), ("+10", 600), (" 2 ", 120), (5.75, 345), ("5:30", 330)],
)
def test_gmt_offset_as_fixed_offset(offset, minutes):
    result = site_timezone("", offset)
    assert result.source == "gmt_offset"
    assert result.warning is None
    assert result.tz.utcoffset(datetime(2024, 1, 1)) == timedelta(minutes=minutes)


def test_gmt_offset_zero_is_utc():
    result = site_timezone(None, "0")
    assert result.tz == timezone.utc
    assert result.source == "gmt_offset"


@pytest.mark.parametrize("offset", ["", None])
def test_empty_settings_default_to_utc_without_warning(offset):
    result = site_timezone("", offset)
    assert (result.tz, result.source, result.warning) == (timezone.utc, "default", None)


@pytest.mark.parametrize("offset", ["abc", "3h", "nan", "inf", "99"])
def test_garbage_gmt_offset_falls_back_to_utc_with_reason(offset):
    result = site_timezone("", offset)
    assert result.tz == timezone.utc
    assert result.source == "default"
    assert offset in result.warning and "UTC" in result.warning


def test_unknown_timezone_string_falls_back_to_offset_with_warning():
    result = site_timezone("Europe/Moskva", "3")
    assert result.source == "gmt_offset"
    assert result.tz.utcoffset(None) == timedelta(hours=3)
    assert "Europe/Moskva" in result.warning


@pytest.mark.parametrize("name", ["UTC+3", "../../etc/passwd", "/etc/localtime"])
def test_invalid_timezone_string_and_no_offset_gives_utc(name):
    result = site_timezone(name, "")
    assert result.tz == timezone.utc
    assert result.source == "default"
    assert name in result.warning
