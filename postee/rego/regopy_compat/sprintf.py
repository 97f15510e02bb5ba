"""`sprintf` with a known format, expanded at load time into `concat` of formatted pieces.

regopy's own `sprintf` prints computed strings quoted when given several arguments, arrays and
objects as broken fragments under `%s`, and `null` as nothing; OPA passes non-strings as their Rego
text. When the format is a literal or a module-level string constant (`tpl := "..."`) and the
arguments a literal array, the call becomes `concat("", [...])` of the literal pieces and one helper
call per verb, which costs about what a native call does. Any other `sprintf` is redirected to the
helper `go_sprintf` (see `calls`), about 40 times slower.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from postee.rego.rego_source import (
    Group,
    Item,
    Token,
    count_newlines,
    is_comprehension,
    is_ident,
    is_op,
    is_ws,
    one_line,
    render,
    significant,
    string_value,
    strip,
)
from postee.rego.regopy_compat.tree import HELPER_REF

_GO_VERB = re.compile(r"%[-+# 0]*[0-9]*(?:\.[0-9]*)?[a-zA-Z%]")


_PLAIN_VERBS = frozenset({"%s", "%v"})


def string_constants(items: list[Item]) -> dict[str, str]:
    """Module-level rules `name := "text"` (or `=`, raw strings) defined once, used only as formats.

    Only such names are safe to replace by their text at load time: any other use (a function
    parameter, `some name in`, a comprehension variable) could be a local shadowing the rule.
    """
    assigned: dict[str, int] = {}

    def count(items: list[Item]) -> None:
        for index, item in enumerate(items):
            if isinstance(item, Group):
                count(item.items)
            elif is_ident(item) and is_op(significant(items, index, +1), ":=", "="):
                assigned[item.text] = assigned.get(item.text, 0) + 1

    count(items)
    uses: dict[str, int] = {}
    format_uses: dict[str, int] = {}

    def count_uses(items: list[Item], in_sprintf: bool) -> None:
        first = significant(items, -1, +1)
        for index, item in enumerate(items):
            if isinstance(item, Group):
                call = item.open.text == "(" and index > 0 and is_ident(items[index - 1])
                count_uses(item.items, call and items[index - 1].text == "sprintf")
            elif is_ident(item) and not is_op(items[index - 1] if index else None, "."):
                uses[item.text] = uses.get(item.text, 0) + 1
                if in_sprintf and item is first and is_op(significant(items, index, +1), ","):
                    format_uses[item.text] = format_uses.get(item.text, 0) + 1

    count_uses(items, False)
    constants: dict[str, str] = {}
    for index, item in enumerate(items):
        if not is_ident(item) or assigned.get(item.text) != 1:
            continue
        if uses.get(item.text, 0) != 1 + format_uses.get(item.text, 0):
            # Used other than as a sprintf format: it might be shadowed (a parameter, `some tpl`).
            continue
        before = items[index - 1] if index else None
        if before is not None and not (isinstance(before, Token) and before.kind == "ws" and "\n" in before.text):
            continue
        operator_index = index + 1
        while operator_index < len(items) and is_ws(items[operator_index]):
            operator_index += 1
        if not is_op(items[operator_index] if operator_index < len(items) else None, ":=", "="):
            continue
        value = significant(items, operator_index, +1)
        text = string_value(value) if value is not None else None
        if text is None:
            continue
        after = significant(items, items.index(value), +1)
        between = items[items.index(value) + 1 : items.index(after)] if after is not None else []
        if after is None or "\n" in render(between):
            constants[item.text] = text
    return constants


def _split_args(group: Group) -> list[list[Item]]:
    args: list[list[Item]] = [[]]
    for item in group.items:
        if is_op(item, ","):
            args.append([])
        else:
            args[-1].append(item)
    return [arg for arg in args if strip(arg)]


def _expanded_sprintf(format_text: str, args: list[list[Item]]) -> list[Item] | None:
    """`concat("", [...])` items equal to sprintf(format_text, args), or None when not expandable."""
    verbs = list(_GO_VERB.finditer(format_text))
    if format_text.count("%") != sum(match.group().count("%") for match in verbs):
        return None
    if sum(1 for match in verbs if match.group() != "%%") != len(args):
        return None
    pieces: list[list[Item]] = []
    position = 0
    arg_index = 0
    for match in verbs:
        text = format_text[position : match.start()]
        position = match.end()
        verb = match.group()
        if verb == "%%":
            text += "%"
        if text:
            pieces.append([Token("string", json.dumps(text, ensure_ascii=False))])
        if verb == "%%":
            continue
        arg = one_line(strip(args[arg_index]))
        arg_index += 1
        if verb in _PLAIN_VERBS:
            pieces.append([Token("ident", HELPER_REF + "fmt_plain"), Group(Token("op", "("), arg, Token("op", ")"))])
        else:
            pieces.append(
                [
                    Token("ident", HELPER_REF + "fmt_verb"),
                    Group(
                        Token("op", "("),
                        [Token("string", json.dumps(verb)), Token("op", ","), Token("ws", " "), *arg],
                        Token("op", ")"),
                    ),
                ]
            )
    tail = format_text[position:]
    if tail:
        pieces.append([Token("string", json.dumps(tail, ensure_ascii=False))])
    elements: list[Item] = []
    for index, piece in enumerate(pieces):
        if index:
            elements.extend([Token("op", ","), Token("ws", " ")])
        elements.extend(piece)
    if not pieces:
        elements = [Token("string", '""')]
    return [
        Token("ident", "concat"),
        Group(
            Token("op", "("),
            [
                Token("string", '""'),
                Token("op", ","),
                Token("ws", " "),
                Group(Token("op", "["), elements, Token("op", "]")),
            ],
            Token("op", ")"),
        ),
    ]


def expand_sprintf(items: list[Item], constants: Mapping[str, str]) -> None:
    """Replace `sprintf(F, [a, ...])` with a literal or constant F by `concat` of formatted pieces.

    The replaced call keeps its line breaks (appended inside the concat array), so lines stay put.
    """
    index = 0
    while index < len(items):
        item = items[index]
        if isinstance(item, Group):
            expand_sprintf(item.items, constants)
        elif (
            is_ident(item)
            and item.text == "sprintf"
            and not is_op(items[index - 1] if index else None, ".")
            and index + 1 < len(items)
            and isinstance(items[index + 1], Group)
            and items[index + 1].open.text == "("
        ):
            call = items[index + 1]
            expand_sprintf(call.items, constants)
            parts = _split_args(call)
            format_text = None
            if len(parts) == 2:
                head = strip(parts[0])
                if len(head) == 1:
                    format_text = string_value(head[0])
                    if format_text is None and is_ident(head[0]):
                        format_text = constants.get(head[0].text)
            array = strip(parts[1]) if len(parts) == 2 else []
            literal_array = (
                len(array) == 1
                and isinstance(array[0], Group)
                and array[0].open.text == "["
                and not is_comprehension(array[0])
            )
            if format_text is not None and literal_array:
                expanded = _expanded_sprintf(format_text, _split_args(array[0]))
                if expanded is not None:
                    newlines = count_newlines([call]) - count_newlines(expanded)
                    if newlines > 0:
                        expanded[1].items[-1].items.append(Token("ws", "\n" * newlines))
                    items[index : index + 2] = expanded
                    index += 2
                    continue
        index += 1
