"""Load-time checks of calls, so a module fails with the user's file and line, not at every evaluation.

Builtins regopy lacks that cannot be written in Rego (`http.send`, `net.cidr_*`, ...) are found by
`unsupported_calls`; calls that name nothing at all (a typo, a missing import) by `unresolved_calls`,
which regopy itself reports only when an evaluation reaches them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from postee.rego.rego_source import NOT_CALLS, Call, calls, strip_comments
from postee.rego.regopy_compat.calls import REDIRECTED_CALLS

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
