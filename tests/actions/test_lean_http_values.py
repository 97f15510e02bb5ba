"""The lean client's fast header-value check says exactly what h11's grammar (its regex) says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postee.actions.lean_http import _PLAIN_VALUE, _plain_value

VALUE_CHARS = st.sampled_from(["a", "Z", "=", " ", "\t", "\x7f", "\x00", "\r", "\n", "é", "~", "!", "\u2028"])


@given(st.lists(VALUE_CHARS, max_size=12).map("".join))
def test_the_fast_check_agrees_with_the_grammar(value):
    assert _plain_value(value) == (_PLAIN_VALUE.fullmatch(value) is not None)


def test_a_long_base64_value_is_plain():
    assert _plain_value("QUJD" * 20_000) and not _plain_value("QUJD" * 20_000 + " ")
