"""Rewrite Postee-dialect Rego (written for OPA) so that regopy 1.5.2 gives OPA's answers.

Postee users bring templates and filters written for OPA. regopy (rego-cpp) parses the same
language but differs in ways that silently change results, so before a module reaches regopy it is
rewritten here. Every rewrite is a faithful transformation under OPA's semantics (the rewritten
module means the same to OPA) and keeps every line on its line number, so the errors regopy reports
still point at the user's file and line. A module with unbalanced brackets is only stripped of
comments: regopy rejects it anyway, and its error then points at the right place.

The rewrites, each for a measured regopy quirk (helpers live in `regopy_helpers`):

- comments are removed (one at the end of a `package`/`import` line is a parse error);
- `"\\uXXXX"` escapes in string literals become the characters (regopy keeps them verbatim);
- `sprintf` with a literal or constant (`tpl := "..."`) format and a literal argument array is
  expanded at load time into `concat` of pieces; any other `sprintf` goes to the helper
  `go_sprintf`. regopy's own prints computed strings quoted when given several arguments, arrays and
  objects as broken fragments under `%s`, and `null` as nothing; OPA passes non-strings as their
  Rego text. The expansion costs about what a native call does; the runtime helper ~40x;
- `jsonformat` (Postee's custom builtin; regopy has no custom-builtin API), `trim_space` (returns
  unescaped text, i.e. invalid JSON output) and the missing `any`, `all`, `trace` go to helpers;
- comprehension heads move into the body (`[f(x) | b]` -> `[v | b; v := f(x)]`): in a function, a
  head that uses an outer variable yields nothing;
- `some v in X` iterates `ordered(X)` and `some k, v in X` (a parse error) becomes
  `some k, v; s := X; k = ordered_keys(s)[_]; v = s[k]`: regopy iterates sets and objects in
  insertion order, OPA in sorted order;
- an indexed reference with a variable index inside a call argument (`contains(x, arr[_])`) is
  hoisted into a local assigned just before the literal: regopy refuses the bundle or answers
  nothing. Literals under `not` are left alone (hoisting would turn "none" into "some not").

Builtins regopy lacks that cannot be written in Rego (`http.send`, `net.cidr_*`, ...) are found by
`unsupported_calls`, so loading fails with the user's file and line instead of every evaluation.

Known limits (not fixed here; use `--rego-engine regorus` when they matter):

- regopy stores strings JSON-escaped, so `count`, `indexof`, `base64.encode` can be wrong and
  `substring`, `trim*` can fail (RegoEvalError) on strings holding quotes, backslashes or control
  characters; `upper`/`lower` are ASCII-only;
- `sprintf` padding (`%5s`) is ignored and `%q` is unsupported;
- `jsonformat` floats outside about 1e-4..1e15 keep regopy's exponent form (Go writes them fixed);
- iteration through `x[k]` / `x[_]` (not `some ... in`) keeps insertion order;
- unsafe variables are not reported: such a rule is simply never true.

Pure text processing (a tokenizer and a bracket tree); nothing here touches the engine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping

from postee.rego import regopy_helpers
from postee.rego.rego_source import (
    NOT_CALLS,
    Call,
    Group,
    Item,
    Token,
    balanced,
    calls,
    count_newlines,
    is_comprehension,
    is_ident,
    is_op,
    is_ws,
    literal_spans,
    mentions,
    one_line,
    opens_rule_body,
    parse,
    render,
    significant,
    split_top,
    string_value,
    strip,
    strip_comments,
    tokenize,
    trailing_ws,
)

HELPER_PACKAGE = regopy_helpers.HELPER_PACKAGE
HELPER_MODULE_NAME = "postee-regopy-compat.rego"
_HELPER_REF = f"data.{HELPER_PACKAGE}."

# Fresh local variable names introduced by the rewrites; the prefix keeps them apart from user names.
_FRESH_PREFIX = "__pc"

# Builtins redirected to the helper package: name in user code -> name there. Helpers never take a
# builtin's name, or their own calls of the builtin would call themselves.
REDIRECTED_CALLS = {
    "jsonformat": "jsonformat",
    "sprintf": "go_sprintf",
    "any": "any",
    "all": "all",
    "trace": "trace",
    "trim_space": "str_trim_space",
    "upper": "str_upper",
}

# Builtins OPA has that regopy 1.5.2 lacks and that the helper package cannot supply.
UNSUPPORTED_BUILTINS = frozenset(
    {
        "http.send",
        "net.cidr_contains",
        "net.cidr_contains_matches",
        "net.cidr_intersects",
        "net.cidr_expand",
        "net.cidr_merge",
        "net.lookup_ip_addr",
        "opa.runtime",
        "rego.parse_module",
    }
)


# ------------------------------------------------------------------------------ text rewrites


def decode_unicode_escapes(source: str) -> str:
    """Replace `\\uXXXX` escapes in string literals by the characters (regopy keeps them literally)."""
    tokens = tokenize(source)
    for token in tokens:
        if token.kind == "string" and "\\u" in token.text:
            try:
                value = json.loads(token.text)
            except ValueError:
                continue
            token.text = json.dumps(value, ensure_ascii=False)
    return render(tokens)


# ------------------------------------------------------------------------------ tree rewrites


class _Fresh:
    """Numbered fresh variable names, unique within one module."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, kind: str) -> str:
        self.count += 1
        return f"{_FRESH_PREFIX}{kind}{self.count}"


def redirect_calls(items: list[Item], names: Mapping[str, str] = REDIRECTED_CALLS) -> None:
    """Point calls of `names` (not methods, not definitions) at the helper package, in place."""
    for index, item in enumerate(items):
        if isinstance(item, Group):
            redirect_calls(item.items, names)
            continue
        if not (is_ident(item) and item.text in names):
            continue
        following = items[index + 1] if index + 1 < len(items) else None
        if not (isinstance(following, Group) and following.open.text == "("):
            continue
        before = items[index - 1] if index > 0 else None
        if is_op(before, "."):
            continue
        item.text = _HELPER_REF + names[item.text]


def drop_print_calls(items: list[Item]) -> None:
    """`print(...)` (OPA: always true, output to stderr) becomes `true`: regopy has no print."""
    for index, item in enumerate(items):
        if isinstance(item, Group):
            drop_print_calls(item.items)
            continue
        following = items[index + 1] if index + 1 < len(items) else None
        if (
            is_ident(item)
            and item.text == "print"
            and not is_op(items[index - 1] if index else None, ".")
            and isinstance(following, Group)
            and following.open.text == "("
        ):
            item.text = "true"
            items[index + 1] = Token("ws", "\n" * count_newlines([following]))


def move_comprehension_heads(items: list[Item], fresh: _Fresh) -> None:
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
            newlines = count_newlines(part)
            if newlines:
                new_head.append(Token("ws", "\n" * newlines))
            assignments.extend(
                [Token("op", ";"), Token("ws", " "), Token("ident", name), Token("ws", " "), Token("op", ":=")]
            )
            assignments.append(Token("ws", " "))
            assignments.extend(one_line(stripped))
        if not assignments:
            continue
        body_core = strip(body)
        trailing = body[len(body) - trailing_ws(body) :] if trailing_ws(body) else []
        leading = body[: body.index(body_core[0])] if body_core else body
        item.items = [*new_head, Token("op", "|"), *leading, *body_core, *assignments, *trailing]


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


def _hoist_in(items: list[Item], in_call: bool, fresh: _Fresh, out: list[list[Item]]) -> None:
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


def hoist_iteration_in_body(body: list[Item], fresh: _Fresh) -> None:
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


def bind_repeated_refs_in_body(body: list[Item], fresh: _Fresh) -> None:
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


def _each_body(items: list[Item], fresh: _Fresh, rewrite: Callable[[list[Item], _Fresh], None],
               top: bool = True) -> None:
    """Apply `rewrite` to every rule and comprehension body, innermost first."""
    for index, item in enumerate(items):
        if not isinstance(item, Group):
            continue
        _each_body(item.items, fresh, rewrite, top=False)
        if is_comprehension(item):
            bar = split_top(item.items, "|")
            assert bar is not None
            body = item.items[bar + 1 :]
            rewrite(body, fresh)
            item.items[bar + 1 :] = body
        elif top and item.open.text == "{" and opens_rule_body(items, index):
            rewrite(item.items, fresh)


def bind_repeated_refs(items: list[Item], fresh: _Fresh) -> None:
    """Apply `bind_repeated_refs_in_body` to every rule and comprehension body."""
    _each_body(items, fresh, bind_repeated_refs_in_body)


def hoist_iteration(items: list[Item], fresh: _Fresh) -> None:
    """Apply `hoist_iteration_in_body` to every rule and comprehension body, innermost first."""
    _each_body(items, fresh, hoist_iteration_in_body)


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


def expand_some_pairs_in_body(body: list[Item], fresh: _Fresh) -> None:
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
                *tokenize(f"some {names[0]} in {_HELPER_REF}ordered("),
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
                *tokenize(f"; {key} = {_HELPER_REF}ordered_keys({name})[_]; {value} = {name}[{key}]"),
            ]
        trailing = literal[len(literal) - trailing_ws(literal) :] if trailing_ws(literal) else []
        kept_newlines = count_newlines(literal[some_index:]) - count_newlines(replacement) - count_newlines(trailing)
        if kept_newlines > 0:
            replacement.append(Token("ws", "\n" * kept_newlines))
        body[start:end] = [*replacement, *trailing]


def expand_some_pairs(items: list[Item], fresh: _Fresh, top: bool = True) -> None:
    """Apply `expand_some_pairs_in_body` to every rule and comprehension body."""
    for index, item in enumerate(items):
        if not isinstance(item, Group):
            continue
        expand_some_pairs(item.items, fresh, top=False)
        if is_comprehension(item):
            bar = split_top(item.items, "|")
            assert bar is not None
            body = item.items[bar + 1 :]
            expand_some_pairs_in_body(body, fresh)
            item.items[bar + 1 :] = body
        elif top and item.open.text == "{" and opens_rule_body(items, index):
            expand_some_pairs_in_body(item.items, fresh)


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
        if uses[item.text] != 1 + format_uses.get(item.text, 0):
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
            pieces.append([Token("ident", _HELPER_REF + "fmt_plain"), Group(Token("op", "("), arg, Token("op", ")"))])
        else:
            pieces.append(
                [
                    Token("ident", _HELPER_REF + "fmt_verb"),
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


# ------------------------------------------------------------------------------------ checks


def unsupported_calls(source: str) -> list[Call]:
    """Calls of builtins regopy lacks (see `UNSUPPORTED_BUILTINS`)."""
    return [call for call in calls(source) if call.name in UNSUPPORTED_BUILTINS]


_DEFINITION = re.compile(r"^[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\(", re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([A-Za-z_][\w.]*)(?:[ \t]+as[ \t]+([A-Za-z_]\w*))?", re.MULTILINE)


def local_names(source: str) -> set[str]:
    """Names a call in this module may resolve to: functions it defines and names it imports."""
    text = strip_comments(source)
    names = {match.group(1) for match in _DEFINITION.finditer(text)}
    for match in _IMPORT.finditer(text):
        path, alias = match.group(1), match.group(2)
        if path.startswith("data.") or path == "data":
            names.add(alias or path.rsplit(".", 1)[-1])
    return names


def unresolved_calls(source: str, known: set[str], is_builtin: Callable[[str], bool]) -> list[Call]:
    """Calls in `source` that name no builtin, no function in `known`, no imported package.

    regopy reports these only when an evaluation reaches them; checking at load time gives the
    file and line up front. Calls through `data.` or an imported package alias are not checked.
    """
    unresolved: list[Call] = []
    for call in calls(source):
        head = call.name.split(".", 1)[0]
        if call.name in known or head in NOT_CALLS or head in ("data", "input"):
            continue
        if "." in call.name and head in known:
            continue
        if call.name in REDIRECTED_CALLS or call.name in UNSUPPORTED_BUILTINS or is_builtin(call.name):
            continue
        unresolved.append(call)
    return unresolved


# ---------------------------------------------------------------------------------- pipeline


def rewrite_module(source: str) -> str:
    """All rewrites of this module, in order; the result has as many lines as `source`."""
    source = decode_unicode_escapes(strip_comments(source))
    tokens = tokenize(source)
    if not balanced(tokens):
        # regopy will reject it anyway; leave the text alone so its error points at the right place.
        return source
    tree = parse(tokens)
    fresh = _Fresh()
    expand_sprintf(tree, string_constants(tree))
    drop_print_calls(tree)
    redirect_calls(tree)
    move_comprehension_heads(tree, fresh)
    expand_some_pairs(tree, fresh)
    bind_repeated_refs(tree, fresh)
    hoist_iteration(tree, fresh)
    return render(tree)


# The helper's own `"\u2028"` literals need the same decoding as user modules.
HELPER_SOURCE = decode_unicode_escapes(regopy_helpers.HELPER_SOURCE)
