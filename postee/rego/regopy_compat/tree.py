"""What the tree rewrites share: fresh local names, the helper package's reference, the body walk.

Several rewrites introduce local variables (`__pcc1`, `__pch2`, ...): one `Fresh` counter per module
keeps them unique. Those that work literal by literal apply to every rule body and every
comprehension body, innermost first, through `each_body`.
"""

from __future__ import annotations

from collections.abc import Callable

from postee.rego.rego_source import Group, Item, is_comprehension, opens_rule_body, split_top
from postee.rego.regopy_helpers import HELPER_PACKAGE

HELPER_REF = f"data.{HELPER_PACKAGE}."
"""How a rewritten call names a helper: `data.postee_regopy_compat.<helper>`."""

# Fresh local variable names introduced by the rewrites; the prefix keeps them apart from user names.
FRESH_PREFIX = "__pc"


class Fresh:
    """Numbered fresh variable names, unique within one module."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, kind: str) -> str:
        self.count += 1
        return f"{FRESH_PREFIX}{kind}{self.count}"


def each_body(items: list[Item], fresh: Fresh, rewrite: Callable[[list[Item], Fresh], None],
              top: bool = True) -> None:
    """Apply `rewrite` to every rule and comprehension body, innermost first."""
    for index, item in enumerate(items):
        if not isinstance(item, Group):
            continue
        each_body(item.items, fresh, rewrite, top=False)
        if is_comprehension(item):
            bar = split_top(item.items, "|")
            assert bar is not None
            body = item.items[bar + 1 :]
            rewrite(body, fresh)
            item.items[bar + 1 :] = body
        elif top and item.open.text == "{" and opens_rule_body(items, index):
            rewrite(item.items, fresh)
