"""Rego source as tokens and a bracket tree, for rewriting text without moving its lines.

The regopy compatibility layer edits user modules; a full Rego parser would be a second parser to
keep in step with OPA's, so edits work on a lossless token list (`render(parse(tokenize(s))) == s`)
grouped by brackets, plus the few syntactic notions the rewrites need: rule and comprehension
bodies, their literals, calls. Anything unusual is left as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import attrs

# --------------------------------------------------------------------------------------- tokens


@attrs.define
class Token:
    """A lexical token; `kind` is one of ws, comment, string, raw, number, ident, op."""

    kind: str
    text: str


_TOKEN = re.compile(
    r"(?P<ws>[ \t\r\n]+)"
    r"|(?P<comment>#[^\n]*)"
    r'|(?P<string>"(?:[^"\\\n]|\\.)*")'
    r"|(?P<raw>`[^`]*`)"
    r"|(?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>:=|==|!=|<=|>=|.)",
    re.DOTALL,
)


def tokenize(source: str) -> list[Token]:
    """Split Rego source into tokens whose texts concatenate back to `source`."""
    return [Token(match.lastgroup or "op", match.group()) for match in _TOKEN.finditer(source)]


def render(items: list[Item]) -> str:
    """The source text of a token/group tree."""
    return "".join(_texts(items))


def _texts(items: list[Item]) -> Iterator[str]:
    for item in items:
        if isinstance(item, Group):
            yield item.open.text
            yield from _texts(item.items)
            if item.close is not None:
                yield item.close.text
        else:
            yield item.text


@attrs.define
class Group:
    """A bracketed span: `(...)`, `[...]` or `{...}` with its contents as a tree."""

    open: Token
    items: list[Item]
    close: Token | None


Item = Token | Group

_CLOSERS = {"(": ")", "[": "]", "{": "}"}


def parse(tokens: list[Token]) -> list[Item]:
    """Build the bracket tree. Unbalanced input is kept as is (regopy will report it)."""
    root: list[Item] = []
    stack: list[Group] = []
    for token in tokens:
        current = stack[-1].items if stack else root
        if token.kind == "op" and token.text in _CLOSERS:
            group = Group(token, [], None)
            current.append(group)
            stack.append(group)
        elif token.kind == "op" and stack and token.text == _CLOSERS[stack[-1].open.text]:
            stack.pop().close = token
        else:
            current.append(token)
    return root


def balanced(tokens: list[Token]) -> bool:
    stack: list[str] = []
    for token in tokens:
        if token.kind != "op":
            continue
        if token.text in _CLOSERS:
            stack.append(_CLOSERS[token.text])
        elif token.text in _CLOSERS.values():
            if not stack or stack.pop() != token.text:
                return False
    return not stack


def strip_comments(source: str) -> str:
    """Drop every comment, keeping line breaks (so line numbers do not move)."""
    return render([t for t in tokenize(source) if t.kind != "comment"])


def significant(items: list[Item], index: int, step: int) -> Item | None:
    """The nearest non-whitespace item from `index` in direction `step` (exclusive)."""
    index += step
    while 0 <= index < len(items):
        item = items[index]
        if not (isinstance(item, Token) and item.kind in ("ws", "comment")):
            return item
        index += step
    return None


def is_op(item: Item | None, *texts: str) -> bool:
    return isinstance(item, Token) and item.kind == "op" and item.text in texts


def is_ws(item: Item | None) -> bool:
    return isinstance(item, Token) and item.kind == "ws"


def is_ident(item: Item | None) -> bool:
    return isinstance(item, Token) and item.kind == "ident"


def split_top(items: list[Item], separator: str) -> int | None:
    for index, item in enumerate(items):
        if is_op(item, separator):
            return index
    return None


def strip(items: list[Item]) -> list[Item]:
    start, end = 0, len(items)
    while start < end and isinstance(items[start], Token) and items[start].kind == "ws":
        start += 1
    while end > start and isinstance(items[end - 1], Token) and items[end - 1].kind == "ws":
        end -= 1
    return items[start:end]


def one_line(items: list[Item]) -> list[Item]:
    """`items` with line breaks in top-level whitespace turned into spaces (they move lines)."""
    return [
        Token("ws", " ") if isinstance(item, Token) and item.kind == "ws" and "\n" in item.text else item
        for item in items
    ]


def count_newlines(items: list[Item]) -> int:
    return render(items).count("\n")


def mentions(items: list[Item], name: str) -> bool:
    for item in items:
        if isinstance(item, Group):
            if mentions(item.items, name):
                return True
        elif item.kind == "ident" and item.text == name:
            return True
    return False


def is_comprehension(group: Group) -> bool:
    return group.open.text in "[{" and split_top(group.items, "|") is not None


def trailing_ws(items: list[Item]) -> int:
    count = 0
    for item in reversed(items):
        if isinstance(item, Token) and item.kind == "ws":
            count += 1
        else:
            break
    return count


# Tokens after which a line break does not end a body literal.
_CONTINUES = frozenset({",", ":=", "=", "==", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "&", "|", ":", "."})
_CONTINUATION_WORDS = frozenset({"not", "some", "in", "with", "as", "every", "contains"})
# Words after which a `{` opens a rule body at module level.
_BODY_AFTER_WORDS = frozenset({"if", "else"})
_NOT_BODY_AFTER_WORDS = frozenset({"contains", "in", "not", "some", "default", "import", "package", "with", "as"})


def literal_spans(body: list[Item]) -> list[tuple[int, int]]:
    """Index spans [start, end) of the literals of a body (split on `;` and line breaks)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for index, item in enumerate(body):
        boundary = is_op(item, ";")
        if isinstance(item, Token) and item.kind == "ws" and "\n" in item.text:
            before = significant(body, index, -1)
            after = significant(body, index, +1)
            continues = (
                (isinstance(before, Token) and before.kind == "op" and before.text in _CONTINUES)
                or (isinstance(before, Token) and before.kind == "ident" and before.text in _CONTINUATION_WORDS)
                or (isinstance(after, Token) and after.kind == "op" and after.text in _CONTINUES)
                or (isinstance(after, Token) and after.kind == "ident" and after.text in ("with", "in"))
            )
            boundary = not continues
        if boundary:
            spans.append((start, index))
            start = index + 1
    spans.append((start, len(body)))
    return [(s, e) for s, e in spans if any(not (isinstance(i, Token) and i.kind == "ws") for i in body[s:e])]


def opens_rule_body(items: list[Item], index: int) -> bool:
    before = significant(items, index, -1)
    if before is None:
        return False
    if isinstance(before, Group):
        return True
    if before.kind in ("string", "raw", "number"):
        return True
    if before.kind == "ident":
        return before.text in _BODY_AFTER_WORDS or before.text not in _NOT_BODY_AFTER_WORDS
    return False


def string_value(token: Item) -> str | None:
    if not isinstance(token, Token):
        return None
    if token.kind == "raw":
        return token.text[1:-1]
    if token.kind == "string":
        try:
            return json.loads(token.text)
        except ValueError:
            return None
    return None


@attrs.frozen
class Call:
    """A function call in a module: the (dotted) name as written and its 1-based line."""

    name: str
    line: int


# Words that may stand before `(` without being a function call.
NOT_CALLS = frozenset({"not", "in", "some", "every", "if", "else", "with", "as", "default", "set", "contains", "print"})


def calls(source: str) -> list[Call]:
    """Every `name(` / `a.b.name(` call in `source` (definitions included), with its line."""
    found: list[Call] = []
    line = 1
    significant: list[tuple[Token, int]] = []
    for token in tokenize(source):
        if token.kind not in ("ws", "comment"):
            significant.append((token, line))
        line += token.text.count("\n")
    for index, (token, token_line) in enumerate(significant):
        if token.kind != "ident" or (index > 0 and is_op(significant[index - 1][0], ".")):
            continue
        name = token.text
        cursor = index
        while (
            cursor + 2 < len(significant)
            and is_op(significant[cursor + 1][0], ".")
            and is_ident(significant[cursor + 2][0])
        ):
            cursor += 2
            name += "." + significant[cursor][0].text
        if cursor + 1 < len(significant) and is_op(significant[cursor + 1][0], "("):
            found.append(Call(name, token_line))
    return found
