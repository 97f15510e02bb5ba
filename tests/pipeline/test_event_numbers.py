"""Reading an event's numbers without a Python hook per number when none can be out of range (issue
#15) gives exactly what reading them through the hooks gives: same values, same types, same text kept,
same refusals."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postee.pipeline import events
from postee.pipeline.events import InvalidEvent, parse_event

numbers = st.one_of(
    st.integers(min_value=-(10**25), max_value=10**25),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-400, max_value=400).map(lambda e: f"1.5e{e}"),  # spelled, may overflow
    st.integers(min_value=1, max_value=30).map(lambda n: "9" * n),
)
values = st.recursive(
    st.one_of(numbers, st.text(alphabet="ab1e9 ", max_size=25), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)),
    max_leaves=20,
)


def spelled(value) -> str:
    """JSON text, with numbers given as strings above written as bare numbers."""
    if isinstance(value, str) and value and (value[0].isdigit() or value.startswith("1.5e")) and \
            value.replace("1.5e", "").lstrip("-").isdigit():
        return value
    if isinstance(value, list):
        return "[" + ",".join(spelled(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{spelled(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def through_the_hooks(text: str):
    """The body as read before the fast path: every number through the hooks (`_Integers` turns an
    integer past 64 bits into the float64 Go reads); raises InvalidEvent's message as a ValueError."""
    try:
        text = text.replace("`", "'")  # as parse_event does (Markdown quotes)
        return json.loads(text, object_pairs_hook=dict, parse_constant=events._refuse_constant,
                          parse_float=events._finite_float, parse_int=events._Integers())
    except events._NotJson as exc:
        raise ValueError(f"invalid JSON: {exc}") from None


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=4), values, max_size=5))
def test_numbers_read_without_hooks_are_read_as_with_them(body):
    text = spelled(body)
    try:
        expected = through_the_hooks(text)
    except ValueError as exc:
        with pytest.raises(InvalidEvent) as got:
            parse_event(text.encode())
        assert str(got.value) == str(exc)
        return
    event = parse_event(text.encode())
    assert same(event.body, expected)
    assert json.loads(event.text) == expected  # the text kept reads as the body (re-encoded if converted)


@pytest.mark.parametrize("text", ['{"a": 1e309}', '{"a": -1E+0400}', '{"a": 9223372036854775808}',
                                  '{"a": 123456789012345678901234567890}'])
def test_numbers_that_may_not_fit_still_go_through_the_hooks(text):
    assert events._MAYBE_OUT_OF_RANGE.search(text)
    try:
        value = parse_event(text.encode()).body["a"]
    except InvalidEvent as exc:
        assert "out of range" in str(exc)
    else:
        assert isinstance(value, float)  # past 64 bits: the float64 Go reads
