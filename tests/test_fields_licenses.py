"""Pure value parsers and licence normalisation."""
import pytest

from bestiary.connectors.fields import absolute_url, blank_to_none, lat_lon, parse_date, parse_length
from bestiary.connectors.licenses import license_allowed, normalize_license


@pytest.mark.parametrize("given,want", [
    ("//creativecommons.org/licenses/by-nc-sa/4.0/", "CC-BY-NC-SA-4.0"),
    ("https://creativecommons.org/licenses/by-sa/4.0/", "CC-BY-SA-4.0"),
    ("http://creativecommons.org/licenses/by-nc/4.0/legalcode", "CC-BY-NC-4.0"),
    ("//creativecommons.org/licenses/by-nc-nd/2.5/", "CC-BY-NC-ND-2.5"),
    ("cc-by-nc", "CC-BY-NC-4.0"), ("cc-by", "CC-BY-4.0"), ("cc0", "CC0-1.0"), ("CC-BY-NC-SA", "CC-BY-NC-SA-4.0"),
    ("CC BY-NC 4.0", "CC-BY-NC-4.0"), ("http://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
    (None, "unknown"), ("", "unknown"), ("all rights reserved", "unknown"), ("cc-nc", "unknown"),
    ("Macaulay Library Standard", "unknown"), ("cc-by-by", "unknown"),
])
def test_normalize_license(given, want):
    assert normalize_license(given) == want


def test_license_allowed_patterns():
    allow = ["CC0-1.0", "CC-BY-*", "CC-BY-NC-*"]
    assert license_allowed("CC-BY-NC-4.0", allow)
    assert license_allowed("CC0-1.0", allow)
    assert not license_allowed("CC-BY-NC-ND-4.0", ["CC-BY-NC-SA-*", "CC-BY-4.0"])
    assert not license_allowed("unknown", ["*"])


@pytest.mark.parametrize("given,want", [("4:13", 253.0), ("0:07", 7.0), ("1:02:03", 3723.0), ("", None),
                                        (None, None), ("12.5", 12.5), ("a:b", None), ("1:2:3:4", None)])
def test_parse_length(given, want):
    assert parse_length(given) == want


@pytest.mark.parametrize("given,want", [
    ("2015-06-23", "2015-06-23"), ("2015-06-00", "2015-06"), ("2015-00-00", "2015"), ("0000-00-00", None),
    ("2021-06-25 22:18:43+00:00", "2021-06-25"), ("2020-08-27T08:57:22+00:00", "2020-08-27"),
    ("", None), ("yesterday", None), ("2015-13-01", "2015"),
])
def test_parse_date(given, want):
    assert parse_date(given) == want


def test_blank_url_and_coordinates():
    assert blank_to_none("  ") is None and blank_to_none(" x ") == "x" and blank_to_none(0) == 0
    assert absolute_url("//xeno-canto.org/1/download") == "https://xeno-canto.org/1/download"
    assert absolute_url("https://a/b") == "https://a/b"
    assert lat_lon("43.6571", "-103.4143") == (43.6571, -103.4143)
    assert lat_lon("95", "10") == (None, None)
    assert lat_lon("", "10") == (None, None)
