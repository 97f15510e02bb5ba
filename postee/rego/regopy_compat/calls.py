"""Calls regopy gets wrong or lacks, sent to the helper package (`regopy_helpers`) or dropped.

`jsonformat` (Postee's custom builtin; regopy has no custom-builtin API), `sprintf` (when it is not
expanded at load time, see `sprintf`), `trim_space` and `upper` (they return unescaped text) and the
missing `any`, `all`, `trace` are redirected; `print` (missing too) becomes `true`, as OPA's is.
"""

from __future__ import annotations

from collections.abc import Mapping

from postee.rego.rego_source import Group, Item, Token, count_newlines, is_ident, is_op
from postee.rego.regopy_compat.tree import HELPER_REF

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
        item.text = HELPER_REF + names[item.text]


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
