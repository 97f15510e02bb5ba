"""Rewrites of references with a variable index (`a.b[j]`, `arr[_]`).

- Hoisting: an iterated reference inside a call argument (`contains(x, arr[_])`) becomes a local
  assigned just before the literal; regopy refuses the bundle or answers nothing otherwise.
  Literals under `not` become `count([...]) == 0` (hoisting alone would turn "none" into "some not").
- Binding: a reference with a variable index used in several literals is looked up once
  (`v := a.b[j]`), because regopy's cost grows as n^k with k uses.
"""

from __future__ import annotations

from collections.abc import Iterator

from postee.rego.rego_source import (
    Group,
    Item,
    Token,
    is_comprehension,
    is_ident,
    is_op,
    is_ws,
    literal_spans,
    one_line,
    render,
    significant,
    strip,
    tokenize,
    trailing_ws,
)
from postee.rego.regopy_compat.tree import Fresh, each_body


def _is_index(items: list[Item], index: int) -> bool:
    """Whether the `[` group at `index` indexes a reference (rather than being an array literal)."""
    if index == 0:
        return False
    before = items[index - 1]
    if isinstance(before, Group):
        return before.open.text in "[(" and before.close is not None
    return before.kind == "ident" or before.kind == "string"


def _variable_index(group: Group) -> bool:
    inner = strip(group.items)
    return len(inner) == 1 and is_ident(inner[0]) and inner[0].text not in ("true", "false", "null")


def _ref_span(items: list[Item], index: int) -> tuple[int, int] | None:
    """The [start, end) of the reference containing the index group at `index`, if it is a plain ref."""
    start = index
    while start > 0:
        before = items[start - 1]
        if isinstance(before, Group) and before.open.text == "[":
            start -= 1
        elif is_ident(before):
            start -= 1
            if start > 0 and is_op(items[start - 1], "."):
                start -= 1
                continue
            break
        else:
            return None
    if not is_ident(items[start]) or (start > 0 and is_op(items[start - 1], ".")):
        return None
    end = index + 1
    while end < len(items):
        following = items[end]
        if isinstance(following, Group) and following.open.text == "[" and _is_index(items, end):
            end += 1
        elif is_op(following, ".") and end + 1 < len(items) and is_ident(items[end + 1]):
            end += 2
        else:
            break
    return start, end


def _hoist_in(items: list[Item], in_call: bool, fresh: Fresh, out: list[list[Item]]) -> None:
    """Replace iterated refs inside call arguments by fresh vars; collect `v := ref` assignments."""
    index = 0
    while index < len(items):
        item = items[index]
        if isinstance(item, Group):
            if is_comprehension(item):
                index += 1
                continue
            if (
                in_call
                and item.open.text == "["
                and _is_index(items, index)
                and _variable_index(item)
                and (span := _ref_span(items, index)) is not None
            ):
                start, end = span
                name = fresh("h")
                out.append(
                    [Token("ident", name), Token("ws", " "), Token("op", ":="), Token("ws", " ")]
                    + one_line(items[start:end])
                )
                items[start:end] = [Token("ident", name)]
                index = start + 1
                continue
            is_call = item.open.text == "(" and index > 0 and is_ident(items[index - 1])
            _hoist_in(item.items, in_call or is_call, fresh, out)
        index += 1


def hoist_iteration_in_body(body: list[Item], fresh: Fresh) -> None:
    """Hoist iterated refs out of call arguments of each literal of `body`.

    `f(a[_])` becomes `v := a[_]; f(v)`. Under `not` that would mean "some element fails" instead
    of "no element matches", so `not f(a[_])` becomes `count([1 | v := a[_]; f(v)]) == 0`.
    """
    for start, end in reversed(literal_spans(body)):
        literal = body[start:end]
        first = significant(literal, -1, +1)
        if is_ident(first) and first.text in ("some", "every", "default"):
            continue
        negated = is_ident(first) and first.text == "not"
        lead = literal.index(first) if first is not None else 0
        expression = literal[lead + 1 :] if negated else literal[lead:]
        assignments: list[list[Item]] = []
        _hoist_in(expression, False, fresh, assignments)
        if not assignments:
            continue
        prefix: list[Item] = []
        for assignment in assignments:
            prefix.extend(assignment)
            prefix.extend([Token("op", ";"), Token("ws", " ")])
        if not negated:
            body[start:end] = [*literal[:lead], *prefix, *expression]
            continue
        trailing = trailing_ws(expression)
        core = expression[: len(expression) - trailing] if trailing else expression
        comprehension = Group(Token("op", "["), [*tokenize("1 | "), *prefix, *core], Token("op", "]"))
        body[start:end] = [
            *literal[:lead],
            Token("ident", "count"),
            Group(Token("op", "("), [comprehension], Token("op", ")")),
            *tokenize(" == 0"),
            *expression[len(expression) - trailing :],
        ]


def _indexed_prefixes(items: list[Item]) -> Iterator[tuple[list[Item], int, int]]:
    """(list, start, end) of every `ref[var]` prefix (var not `_`) outside nested comprehensions."""
    for index, item in enumerate(items):
        if not isinstance(item, Group) or is_comprehension(item):
            continue
        if (
            item.open.text == "["
            and _is_index(items, index)
            and _variable_index(item)
            and strip(item.items)[0].text != "_"
            and (span := _ref_span(items, index)) is not None
        ):
            yield items, span[0], index + 1
        yield from _indexed_prefixes(item.items)


def _prefix_key(items: list[Item]) -> str:
    return "".join(render([item]) for item in items if not is_ws(item))


def _binding_spans(body: list[Item]) -> list[tuple[int, int]]:
    """Literal spans of `body` that may bind variables (not `not ...`, not `some` declarations)."""
    return [
        (start, end)
        for start, end in literal_spans(body)
        if not (is_ident(first := significant(body[start:end], -1, +1)) and first.text in ("not", "some"))
    ]


def bind_repeated_refs_in_body(body: list[Item], fresh: Fresh) -> None:
    """Bind a reference with a variable index used in several literals once: `v := a.b[j]`.

    `x := item.vulns[j].name` ... `item.vulns[j].severity == s` costs n^k on regopy for k uses;
    after the rewrite the element is looked up once and the literals use `v`. Same meaning: every
    use shares `j`, so they all denote the same element.
    """
    spans = _binding_spans(body)
    counts: dict[str, int] = {}
    first_literal: dict[str, int] = {}
    for number, (start, end) in enumerate(spans):
        for items, prefix_start, prefix_end in _indexed_prefixes(body[start:end]):
            key = _prefix_key(items[prefix_start:prefix_end])
            counts[key] = counts.get(key, 0) + 1
            first_literal.setdefault(key, number)
    repeated = [key for key, uses in counts.items() if uses > 1]
    if not repeated:
        return
    insertions: dict[int, list[Item]] = {}
    for key in repeated:
        name = fresh("b")
        definition: list[Item] | None = None
        for start, end in reversed(spans):
            literal = body[start:end]
            for items, prefix_start, prefix_end in reversed(list(_indexed_prefixes(literal))):
                if _prefix_key(items[prefix_start:prefix_end]) == key:
                    if definition is None or items is literal:
                        definition = one_line(items[prefix_start:prefix_end])
                    items[prefix_start:prefix_end] = [Token("ident", name)]
            body[start:end] = literal
        spans = _binding_spans(body)  # same literals, shifted by the shorter references
        assert definition is not None
        insertions.setdefault(first_literal[key], []).extend(
            [
                Token("ident", name),
                Token("ws", " "),
                Token("op", ":="),
                Token("ws", " "),
                *definition,
                Token("op", ";"),
                Token("ws", " "),
            ]
        )
    for number in sorted(insertions, reverse=True):
        start, end = spans[number]
        literal = body[start:end]
        lead = literal.index(significant(literal, -1, +1))
        body[start:end] = [*literal[:lead], *insertions[number], *literal[lead:]]


def bind_repeated_refs(items: list[Item], fresh: Fresh) -> None:
    """Apply `bind_repeated_refs_in_body` to every rule and comprehension body."""
    each_body(items, fresh, bind_repeated_refs_in_body)


def hoist_iteration(items: list[Item], fresh: Fresh) -> None:
    """Apply `hoist_iteration_in_body` to every rule and comprehension body, innermost first."""
    each_body(items, fresh, hoist_iteration_in_body)
