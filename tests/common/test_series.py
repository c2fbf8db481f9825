"""The named-series contract: selectors read and written canonically, the reader alert rules use, the wire bounds."""

from __future__ import annotations

import msgspec
import pytest

from servermanager.common.metrics import Sample
from servermanager.common.series import (
    SelectorError,
    SeriesPoint,
    format_selector,
    labels_key,
    parse_selector,
    series_reader,
)
from tests.helpers.core import metrics


def test_selectors_round_trip_canonically() -> None:
    assert parse_selector('check_up{ check = "web" , zone="a\\"b"}') == (
        "check_up",
        {"check": "web", "zone": 'a"b'},
    )
    assert format_selector("check_up", {"zone": "x", "check": "web"}) == 'check_up{check="web",zone="x"}'
    assert parse_selector(format_selector("m", {"k": 'a"b\\c'})) == ("m", {"k": 'a"b\\c'})
    assert parse_selector("queue_depth") == ("queue_depth", {})
    assert labels_key({"b": "1", "a": "2"}) == '{"a":"2","b":"1"}' and labels_key({}) == "{}"


@pytest.mark.parametrize("bad", ["9name", "name{", "name{k=v}", 'name{k="v" j="w"}', "a b", ""])
def test_bad_selectors_say_so(bad: str) -> None:
    with pytest.raises(SelectorError, match="series selector"):
        parse_selector(bad)


def test_reader_matches_the_exact_label_set() -> None:
    m = metrics(
        series=[SeriesPoint("check_up", 0.0, {"check": "web"}), SeriesPoint("check_up", 1.0, {"check": "db"})]
    )
    assert series_reader('check_up{check="web"}')(m) == 0.0
    assert series_reader('check_up{check="db"}')(m) == 1.0
    assert series_reader("check_up")(m) is None  # no point without labels
    assert series_reader('check_up{check="web"}')(metrics()) is None


def test_wire_bounds_refuse_bad_points() -> None:
    ok = msgspec.json.encode(
        Sample(seq=1, ts=1.0, metrics=metrics(series=[SeriesPoint("a", 1.0, {"k": "v"})]))
    )
    assert msgspec.json.decode(ok, type=Sample).metrics.series == [SeriesPoint("a", 1.0, {"k": "v"})]
    for bad in ('["9a", 1.0]', '["a", 1.0, {"bad-label": "x"}]', '["' + "a" * 129 + '", 1.0]'):
        assert b'["a",1.0,{"k":"v"},null]' in ok
        raw = ok.replace(b'["a",1.0,{"k":"v"},null]', bad.encode())
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(raw, type=Sample)
    many = msgspec.json.encode(Sample(seq=1, ts=1.0, metrics=metrics(series=[SeriesPoint("a", 1.0)] * 501)))
    with pytest.raises(msgspec.ValidationError, match="length"):
        msgspec.json.decode(many, type=Sample)
