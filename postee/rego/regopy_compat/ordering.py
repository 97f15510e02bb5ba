"""`some ... in X` made to iterate in OPA's order (and to parse on regopy).

regopy iterates sets and objects in insertion order, OPA in sorted order (keys for objects), so a
template that renders "the first" item or joins items gives other text. `some k, v in X` is also a
parse error on regopy ("Invalid collection").
"""

from __future__ import annotations

from postee.rego.rego_source import (
    Item,
    Token,
    count_newlines,
    is_ident,
    is_op,
    is_ws,
    literal_spans,
    one_line,
    strip,
    tokenize,
    trailing_ws,
)
from postee.rego.regopy_compat.tree import HELPER_REF, Fresh, each_body


def _some_pair(literal: list[Item]) -> tuple[int, list[str], int] | None:
    """For `some v in X` / `some k, v in X`: (index of `some`, names, index of `in`), else None."""
    significant = [(i, item) for i, item in enumerate(literal) if not is_ws(item)]
    if len(significant) < 4 or not (is_ident(significant[0][1]) and significant[0][1].text == "some"):
        return None
    names: list[str] = []
    position = 1
    while position < len(significant):
        item = significant[position][1]
        if not is_ident(item):
            return None
        names.append(item.text)
        following = significant[position + 1][1] if position + 1 < len(significant) else None
        if is_ident(following) and following.text == "in":
            break
        if not is_op(following, ","):
            return None
        position += 2
    if len(names) not in (1, 2) or position + 2 >= len(significant):
        return None
    return significant[0][0], names, significant[position + 1][0]


def expand_some_pairs_in_body(body: list[Item], fresh: Fresh) -> None:
    """Rewrite `some ... in X` so that it iterates in OPA's order and parses on regopy.

    `some v in X` becomes `some v in ordered(X)` and `some k, v in X` (a parse error on regopy:
    "Invalid collection") becomes `some k, v; s := X; k = ordered_keys(s)[_]; v = s[k]`. regopy
    iterates sets and objects in insertion order; OPA in sorted order (keys for objects).
    """
    for start, end in reversed(literal_spans(body)):
        literal = body[start:end]
        found = _some_pair(literal)
        if found is None:
            continue
        some_index, names, in_index = found
        collection = strip(literal[in_index + 1 :])
        if len(names) == 1:
            replacement: list[Item] = [
                *literal[:some_index],
                *tokenize(f"some {names[0]} in {HELPER_REF}ordered("),
                *collection,
                Token("op", ")"),
            ]
        else:
            key, value = names
            name = fresh("s")
            replacement = [
                *literal[:some_index],
                *tokenize(f"some {key}, {value}; {name} := "),
                *one_line(collection),
                *tokenize(f"; {key} = {HELPER_REF}ordered_keys({name})[_]; {value} = {name}[{key}]"),
            ]
        trailing = literal[len(literal) - trailing_ws(literal) :] if trailing_ws(literal) else []
        kept_newlines = count_newlines(literal[some_index:]) - count_newlines(replacement) - count_newlines(trailing)
        if kept_newlines > 0:
            replacement.append(Token("ws", "\n" * kept_newlines))
        body[start:end] = [*replacement, *trailing]


def expand_some_pairs(items: list[Item], fresh: Fresh) -> None:
    """Apply `expand_some_pairs_in_body` to every rule and comprehension body."""
    each_body(items, fresh, expand_some_pairs_in_body)
