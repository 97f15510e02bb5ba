"""Comprehension heads moved into the body: `[f(x) | b]` becomes `[v | b; v := f(x)]`.

In a function, a regopy comprehension whose head uses an outer variable yields nothing; OPA's does
not care where the head's variables come from.
"""

from __future__ import annotations

from postee.rego.rego_source import (
    Group,
    Item,
    Token,
    count_newlines,
    is_comprehension,
    is_ident,
    mentions,
    one_line,
    split_top,
    strip,
    trailing_ws,
)
from postee.rego.regopy_compat.tree import Fresh


def move_comprehension_heads(items: list[Item], fresh: Fresh) -> None:
    """Rewrite `[H | B]` to `[v | B; v := H]` (and sets, objects alike), in place, recursively.

    A head that is a variable bound in the body is left alone. Line breaks of the moved head are
    kept where the head was, so following lines keep their numbers.
    """
    for item in items:
        if not isinstance(item, Group):
            continue
        move_comprehension_heads(item.items, fresh)
        if not is_comprehension(item):
            continue
        bar = split_top(item.items, "|")
        assert bar is not None
        head, body = item.items[:bar], item.items[bar + 1 :]
        parts: list[list[Item]]
        if item.open.text == "{" and split_top(head, ":") is not None:
            colon = split_top(head, ":")
            parts = [head[:colon], head[colon + 1 :]]
        else:
            parts = [head]
        new_head: list[Item] = []
        assignments: list[Item] = []
        if any(not strip(part) for part in parts) or not strip(body):
            continue
        for position, part in enumerate(parts):
            stripped = strip(part)
            if position:
                new_head.append(Token("op", ":"))
            if len(stripped) == 1 and is_ident(stripped[0]) and mentions(body, stripped[0].text):
                new_head.extend(part)
                continue
            name = fresh("c")
            new_head.extend([Token("ws", " "), Token("ident", name), Token("ws", " ")])
            moved = one_line(stripped)
            # the line breaks that do not move with the head (those inside its strings and groups do)
            newlines = count_newlines(part) - count_newlines(moved)
            if newlines:
                new_head.append(Token("ws", "\n" * newlines))
            assignments.extend(
                [Token("op", ";"), Token("ws", " "), Token("ident", name), Token("ws", " "), Token("op", ":=")]
            )
            assignments.append(Token("ws", " "))
            assignments.extend(moved)
        if not assignments:
            continue
        body_core = strip(body)
        trailing = body[len(body) - trailing_ws(body) :] if trailing_ws(body) else []
        leading = body[: body.index(body_core[0])] if body_core else body
        item.items = [*new_head, Token("op", "|"), *leading, *body_core, *assignments, *trailing]
