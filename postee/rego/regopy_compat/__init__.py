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

Pure text processing (a tokenizer and a bracket tree, `rego_source`); nothing here touches the
engine. One module per rewrite (`text`, `sprintf`, `calls`, `comprehensions`, `ordering`,
`references`), `checks` for the load-time checks, `tree` for what the rewrites share; this module
runs them in order (`rewrite_module`) and is the only one the backend imports.
"""

from __future__ import annotations

from postee.rego import regopy_helpers
from postee.rego.rego_source import balanced, parse, render, strip_comments, tokenize
from postee.rego.regopy_compat.calls import REDIRECTED_CALLS, drop_print_calls, redirect_calls
from postee.rego.regopy_compat.checks import UNSUPPORTED_BUILTINS, local_names, unresolved_calls, unsupported_calls
from postee.rego.regopy_compat.comprehensions import move_comprehension_heads
from postee.rego.regopy_compat.ordering import expand_some_pairs
from postee.rego.regopy_compat.references import bind_repeated_refs, hoist_iteration
from postee.rego.regopy_compat.sprintf import expand_sprintf, string_constants
from postee.rego.regopy_compat.text import decode_unicode_escapes
from postee.rego.regopy_compat.tree import Fresh

__all__ = [
    "HELPER_MODULE_NAME",
    "HELPER_PACKAGE",
    "HELPER_SOURCE",
    "REDIRECTED_CALLS",
    "UNSUPPORTED_BUILTINS",
    "local_names",
    "rewrite_module",
    "unresolved_calls",
    "unsupported_calls",
]

HELPER_PACKAGE = regopy_helpers.HELPER_PACKAGE
HELPER_MODULE_NAME = "postee-regopy-compat.rego"


def rewrite_module(source: str) -> str:
    """All rewrites of this module, in order; the result has as many lines as `source`."""
    source = decode_unicode_escapes(strip_comments(source))
    tokens = tokenize(source)
    if not balanced(tokens):
        # regopy will reject it anyway; leave the text alone so its error points at the right place.
        return source
    tree = parse(tokens)
    fresh = Fresh()
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
