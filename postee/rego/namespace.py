"""Move a set of Rego modules under a namespace of their own, so several sets share one engine.

A route's rule is its own module set (`package postee` with `allow`, from `input:` or from
`input-files:`); alone in its engine, `data` is only its own. To ask every route's rule in one query
(the rule book, issue #15), the sets are loaded side by side, each moved under `data.<namespace>`:

- `package p` becomes `package <namespace>.p`;
- every reference to the root document `data` becomes `data.<namespace>`, so `data.postee.allow`,
  `import data.lib`, `with data.x as ...` and a bare `data` all keep meaning the set's own documents,
  exactly as when the set had an engine to itself.

Only tokens are rewritten, never text inside strings (`"..."`, raw `` `...` ``) or comments, and
`data` only as a whole identifier that is not a field of something else (`input.data` stays). Rego
does not let a variable or rule shadow `data`, so every such identifier is the root document. Line
numbers do not change (nothing is added or removed but on the rewritten lines).
"""

from __future__ import annotations

import re

_TOKENS = re.compile(
    r"""
      (?P<string>"(?:[^"\\\n]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<comment>\#[^\n]*)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_NAMESPACE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def move_under(source: str, namespace: str) -> str:
    """`source` with its packages and its references to `data` moved under `data.<namespace>`."""
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"not a Rego identifier: {namespace!r}")
    out: list[str] = []
    previous = ""  # the last token that is not blank or a comment
    expect_package_path = False
    for match in _TOKENS.finditer(source):
        kind = match.lastgroup
        text = match.group()
        if kind == "word":
            if expect_package_path:
                text = f"{namespace}.{text}"
                expect_package_path = False
            elif text == "package" and _at_line_start(out):
                expect_package_path = True
            elif text == "data" and previous != ".":
                text = f"data.{namespace}"
        out.append(text)
        if kind == "comment" or (kind == "other" and text in " \t\r"):
            continue
        previous = text if kind != "other" or text != "\n" else "\n"
    return "".join(out)


def _at_line_start(out: list[str]) -> bool:
    """True when only blanks precede the current token on its line (`package` is a statement)."""
    for piece in reversed(out):
        if piece == "\n":
            return True
        if piece not in (" ", "\t", "\r"):
            return False
    return True


def move_query_under(query: str, namespace: str) -> str:
    """A query over the set (e.g. `data.postee.allow`) moved the same way."""
    return move_under(query, namespace)
