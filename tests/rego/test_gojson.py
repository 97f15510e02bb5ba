"""gojson writes JSON exactly as Go's encoding/json does (the expected texts are Go's outputs)."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postee.rego import gojson

# value -> what Go's json.Marshal writes for it
GO_MARSHAL = [
    (None, "null"),
    (True, "true"),
    (0, "0"),
    (-12, "-12"),
    (12345678901234567890123, "12345678901234567890123"),
    (1.0, "1"),
    (-0.0, "-0"),
    (0.1, "0.1"),
    (2.5, "2.5"),
    (123456789.0, "123456789"),
    (1e16, "10000000000000000"),
    (1e20, "100000000000000000000"),
    (1e21, "1e+21"),
    (1.5e300, "1.5e+300"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (0.000001, "0.000001"),
    (0.00001234, "0.00001234"),
    (1e-7, "1e-7"),
    (1.5e-7, "1.5e-7"),
    (-2.5e-10, "-2.5e-10"),
    (5e-324, "5e-324"),
    (0.30000000000000004, "0.30000000000000004"),
    ("", '""'),
    ("<a & b>", '"\\u003ca \\u0026 b\\u003e"'),
    ("line\u2028para\u2029", '"line\\u2028para\\u2029"'),
    ("tab\tnl\ncr\r", '"tab\\tnl\\ncr\\r"'),
    ("\x00\x1f", '"\\u0000\\u001f"'),
    ('q"b\\', '"q\\"b\\\\"'),
    ("é ✓ \U0001f600 \x7f", '"é ✓ \U0001f600 \x7f"'),
    ("lone \ud800 surrogate", '"lone \ufffd surrogate"'),
    ([], "[]"),
    ({}, "{}"),
    ({"b": 1, "a": [1.0, "x"], "A": None}, '{"A":null,"a":[1,"x"],"b":1}'),
    ({"é": 1, "z": 2, "Z": 3}, '{"Z":3,"z":2,"é":1}'),
    # strings that look like floats are left alone, floats next to them are fixed
    ({"v": "1.0,", "w": 2.0, "x": "3e-07]"}, '{"v":"1.0,","w":2,"x":"3e-07]"}'),
]


@pytest.mark.parametrize(("value", "expected"), GO_MARSHAL)
def test_marshal_matches_go(value: object, expected: str) -> None:
    assert gojson.marshal(value) == expected


def test_marshal_indent_matches_go() -> None:
    value = {"c": [1.0, {"d": None, "e": "<&>"}], "b": {}, "a": []}
    # json.MarshalIndent(value, "", " ")
    assert gojson.marshal_indent(value) == (
        '{\n "a": [],\n "b": {},\n "c": [\n  1,\n  {\n   "d": null,\n   "e": "\\u003c\\u0026\\u003e"\n  }\n ]\n}'
    )


def test_marshal_indent_prefix_is_not_written_before_the_first_line() -> None:
    # json.MarshalIndent([1], ">", "\t")
    assert gojson.marshal_indent([1], ">", "\t") == "[\n>\t1\n>]"
    assert gojson.marshal_indent("x", ">") == '"x"'


def test_sets_are_sorted_arrays_in_rego_order() -> None:
    assert gojson.marshal({"s": {"b", 2, "a", None, True}}) == '{"s":[null,true,2,"a","b"]}'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, [1, {"x": math.nan}]])
def test_nan_and_infinity_are_errors_like_go(bad: object) -> None:
    with pytest.raises(ValueError):
        gojson.marshal(bad)


def test_not_json_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        gojson.marshal({"x": object()})


# ---------------------------------------------------------------- properties

_finite = st.floats(allow_nan=False, allow_infinity=False)
_scalars = st.none() | st.booleans() | st.integers(-(2**64), 2**64) | _finite | st.text()
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)
_STRING_OR_NUMBER = re.compile(r'"(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*')


def _parse_int(token: str) -> int | float:
    return -0.0 if token == "-0" else int(token)


def _numbers(text: str) -> list[str]:
    return [token for token in _STRING_OR_NUMBER.findall(text) if not token.startswith('"')]


def _normalized(value: object) -> object:
    """Lone surrogates as Go writes them (U+FFFD); numbers as floats, since Go writes 2e16 as an integer."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return re.sub("[\ud800-\udfff]", "\ufffd", value)
    if isinstance(value, list):
        return [_normalized(item) for item in value]
    if isinstance(value, dict):
        return {_normalized(k): _normalized(v) for k, v in value.items()}
    return value


@settings(max_examples=300, deadline=None)
@given(_json)
def test_marshal_round_trips_and_keeps_go_invariants(value: object) -> None:
    text = gojson.marshal(value)
    assert _normalized(json.loads(text)) == _normalized(value)
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    text.encode("utf-8")  # valid UTF-8: no lone surrogates
    # canonical: re-encoding what was decoded gives the same text (`-0` decodes as a float, as in Go)
    assert gojson.marshal(json.loads(text, parse_int=_parse_int)) == text


@settings(max_examples=300, deadline=None)
@given(_json, st.sampled_from(["", " ", "  ", "\t"]))
def test_marshal_indent_is_marshal_reindented(value: object, indent: str) -> None:
    indented = gojson.marshal_indent(value, indent=indent)
    assert json.loads(indented) == json.loads(gojson.marshal(value))
    assert _numbers(indented) == _numbers(gojson.marshal(value))


@settings(max_examples=500, deadline=None)
@given(_finite)
def test_float_form_follows_go_rules(number: float) -> None:
    text = gojson.marshal(number)
    assert float(text) == number  # shortest round-trip digits, no precision lost
    magnitude = abs(number)
    exponent_form = magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21)
    assert ("e" in text) == exponent_form
    assert not text.endswith(".0") and "e-0" not in text and "E" not in text
    if number == int(number) and not exponent_form:
        assert "." not in text
