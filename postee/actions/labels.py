"""Kubernetes label selectors and label values built from requirements, with event values as data only.

Pasting event text into a selector string lets the event write selector syntax: `app in
(event.input.app)` with `web,db,ingress` selects three apps, `app!=event.input.app` with a blank
value selects every pod. So the configured selector is parsed once, at load time, into requirements
(key, operator, values) as the API server reads them; references (`event.input.<path>`) stay inside
the one key or value they were written in. Per event each reference is resolved within its token,
the result must be a valid label key or value (non-blank, at most 63 characters, `[A-Za-z0-9._-]`,
beginning and ending alphanumeric: no operator, comma, parenthesis or space can get through), and the
selector is serialized from the requirements.

Grammar (Kubernetes' `labels.Parse`): requirements separated by commas, each one of `key`, `!key`,
`key=value`, `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`, `key>n`, `key<n`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from postee.actions.model import excerpt
from postee.values.eventpath import REFERENCE_PREFIX, substitute

MAX_NAME = 63
MAX_PREFIX = 253
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_PREFIX_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
SHOWN_VALUE_CHARS = 60
"""Characters of a rejected event value quoted in an error (an event may carry megabytes)."""

EQUALITY = ("=", "==", "!=")
SETS = ("in", "notin")
COMPARISONS = (">", "<")
EXISTS, NOT_EXISTS = "exists", "!"

_TOKEN_RE = re.compile(r"\s*(?:(?P<symbol>==|!=|=|!|\(|\)|,|>|<)|(?P<word>[^\s=!(),<>]+))")


class SelectorError(ValueError):
    """A selector template that is not a label selector (a config error)."""


class LabelValueError(ValueError):
    """An event value that is not a valid label key or value (the send fails, nothing is changed)."""


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value (the empty value is valid), or None."""
    if len(value) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    if value and not _NAME_RE.fullmatch(value):
        return "only letters, digits, '.', '_' and '-' are allowed, beginning and ending with a letter or digit"
    return None


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a valid label (or annotation) key, `[prefix/]name`, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > MAX_PREFIX or not _PREFIX_RE.fullmatch(prefix)):
        return "the prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
    if not name:
        return "the name is empty"
    return label_value_problem(name)


def has_reference(text: str) -> bool:
    return REFERENCE_PREFIX in text


def shown(value: str) -> str:
    """`value` quoted for an error message, cut to `SHOWN_VALUE_CHARS`."""
    return repr(value[:SHOWN_VALUE_CHARS]) + ("…" if len(value) > SHOWN_VALUE_CHARS else "")


def resolve_value(template: str, event: Mapping[str, Any], *, what: str = "value") -> str:
    """`template` with its references resolved; `LabelValueError` unless a non-blank valid label `what`.

    A template without references is returned as it is (it was checked at load time).
    """
    if not has_reference(template):
        return template
    value = substitute(template, event)
    check = label_key_problem if what == "key" else label_value_problem
    problem = "it is missing or blank in the event" if not value.strip() else check(value)
    if problem:
        raise LabelValueError(f"{template!r} gave {shown(value)}, not a valid label {what}: {problem}")
    return value


@attrs.frozen
class Requirement:
    """One requirement of a selector: `key`, operator, values; key and values may hold references."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def resolve(self, event: Mapping[str, Any]) -> Requirement:
        """This requirement with its references resolved (`LabelValueError` for an unusable value)."""
        values = tuple(resolve_value(value, event) for value in self.values)
        if self.operator in COMPARISONS and not values[0].lstrip("-").isdigit():
            raise LabelValueError(f"{self.values[0]!r} gave {shown(values[0])}, not an integer for {self.operator}")
        return Requirement(resolve_value(self.key, event, what="key"), self.operator, values)

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == NOT_EXISTS:
            return f"!{self.key}"
        if self.operator in SETS:
            return f"{self.key} {self.operator} ({','.join(self.values)})"
        return f"{self.key}{self.operator}{self.values[0]}"


@attrs.frozen
class Selector:
    """A parsed label selector template."""

    requirements: tuple[Requirement, ...]

    def resolve(self, event: Mapping[str, Any]) -> Selector:
        return Selector(tuple(requirement.resolve(event) for requirement in self.requirements))

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


def parse_selector(text: str) -> Selector:
    """`text` as a `Selector`; `SelectorError` naming what is wrong and where."""
    tokens = _Tokens(text)
    requirements = []
    while True:
        requirements.append(_requirement(tokens))
        if tokens.peek() is None:
            return Selector(tuple(requirements))
        tokens.expect(",")


def _requirement(tokens: _Tokens) -> Requirement:
    if tokens.peek() == "!":
        tokens.next()
        return Requirement(_key(tokens), NOT_EXISTS)
    key = _key(tokens)
    following = tokens.peek()
    if following in (None, ","):
        return Requirement(key, EXISTS)
    if following in EQUALITY or following in COMPARISONS:
        operator = tokens.next()
        value = _value(tokens, allow_empty=operator in EQUALITY)
        if operator in COMPARISONS and not has_reference(value) and not value.lstrip("-").isdigit():
            raise SelectorError(f"{operator} needs an integer, not {value!r}")
        return Requirement(key, operator, (value,))
    if following in SETS and tokens.is_word():
        operator = tokens.next()
        tokens.expect("(")
        values = [_value(tokens, allow_empty=False)]
        while tokens.peek() == ",":
            tokens.next()
            values.append(_value(tokens, allow_empty=False))
        tokens.expect(")")
        return Requirement(key, operator, tuple(values))
    raise SelectorError(f"expected an operator (=, ==, !=, in, notin, >, <) or ',' after {key!r}, not {tokens.shown()}")


def _key(tokens: _Tokens) -> str:
    if not tokens.is_word():
        raise SelectorError(f"expected a label key, not {tokens.shown()}")
    key = tokens.next()
    problem = None if has_reference(key) else label_key_problem(key)
    if problem:
        raise SelectorError(f"{key!r} is not a valid label key: {problem}")
    return key


def _value(tokens: _Tokens, *, allow_empty: bool) -> str:
    if not tokens.is_word():
        if allow_empty and tokens.peek() in (None, ","):
            return ""
        raise SelectorError(f"expected a label value, not {tokens.shown()}")
    value = tokens.next()
    problem = None if has_reference(value) else label_value_problem(value)
    if problem:
        raise SelectorError(f"{value!r} is not a valid label value: {problem}")
    return value


class _Tokens:
    """The tokens of a selector (symbols and words), with one token of look-ahead."""

    def __init__(self, text: str) -> None:
        self._items = list(self._scan(text))
        self._index = 0

    @staticmethod
    def _scan(text: str) -> Iterator[tuple[str, bool]]:
        position = 0
        while text[position:].strip():
            match = _TOKEN_RE.match(text, position)
            if match is None:  # pragma: no cover - every non-space character starts a token
                raise SelectorError(f"unexpected {excerpt(text[position:], 20)!r}")
            yield (match["symbol"], False) if match["symbol"] else (match["word"], True)
            position = match.end()

    def peek(self) -> str | None:
        return self._items[self._index][0] if self._index < len(self._items) else None

    def shown(self) -> str:
        """The next token for an error message."""
        token = self.peek()
        return "the end" if token is None else repr(token)

    def is_word(self) -> bool:
        return self._index < len(self._items) and self._items[self._index][1]

    def next(self) -> str:
        if self._index >= len(self._items):
            raise SelectorError("unexpected end")
        token = self._items[self._index][0]
        self._index += 1
        return token

    def expect(self, symbol: str) -> None:
        found = self.peek()
        if found != symbol or self.is_word():
            raise SelectorError(f"expected {symbol!r}, not {self.shown()}")
        self._index += 1
