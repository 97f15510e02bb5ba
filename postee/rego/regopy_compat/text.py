"""Rewrites on the token stream, before the bracket tree is built.

regopy keeps `"\\uXXXX"` escapes in string literals verbatim (OPA decodes them), so they are
decoded here into the characters themselves.
"""

from __future__ import annotations

import json

from postee.rego.rego_source import render, tokenize


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
