import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postee.values.durations import UNIT_SECONDS, DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10s", 10.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("2 d", 172800.0),
        ("2D", 172800.0),
        ("1h30m", 5400.0),
        ("1d 12h", 129600.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("5 min", 300.0),
        ("1w", 604800.0),
        ("90", 90.0),
        (" 90 ", 90.0),
        ("0.5", 0.5),
        (90, 90.0),
        (1.25, 1.25),
        (0, 0.0),
    ],
)
def test_parses_postee_durations(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["", "s", "10x", "1h30", "h1", "-5", "-1s", "ten seconds", "1..5s", True, None, [], {}, math.nan, math.inf, -3],
)
def test_rejects_invalid_durations_with_a_clear_message(value):
    with pytest.raises(DurationError) as info:
        parse_duration(value)
    assert repr(value) in str(info.value) or "negative" in str(info.value) or "finite" in str(info.value)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNIT_SECONDS)), st.sampled_from(["", " "]))
def test_number_and_unit_round_trip(number, unit, space):
    assert parse_duration(f"{number}{space}{unit}") == pytest.approx(number * UNIT_SECONDS[unit])


@given(st.floats(min_value=0, max_value=10**9, allow_nan=False, allow_infinity=False))
def test_format_then_parse_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-9, abs=1e-6)


@given(st.lists(st.tuples(st.integers(0, 1000), st.sampled_from(["d", "h", "m", "s", "ms"])), min_size=1, max_size=5))
def test_compound_durations_add_up(parts):
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_duration(text) == pytest.approx(sum(n * UNIT_SECONDS[u] for n, u in parts))


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=999))
def test_plain_seconds_as_text(whole, thousandths):
    assert parse_duration(f"{whole}.{thousandths:03d}") == pytest.approx(whole + thousandths / 1000)
    assert parse_duration(str(whole)) == whole


def test_format_examples():
    assert format_duration(0) == "0s"
    assert format_duration(90) == "1m30s"
    assert format_duration(86400 + 3600 + 0.5) == "1d1h0.5s"
