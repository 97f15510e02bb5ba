"""Config text shared by the tests of renders made in the rule book's call (issue #15)."""

from __future__ import annotations


def indented(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


def templates_and_hook(sink_url: str, templates: dict[str, str]) -> str:
    """The `templates:` (each a Rego `body`) and `actions:` sections of a config whose routes all post to
    one webhook action, `hook`, at `sink_url`/hook."""
    entries = "".join(f"\n  - name: {name}\n    body: |\n{indented(body, 6)}" for name, body in templates.items())
    return f"""templates:{entries}
actions:
  - name: hook
    type: webhook
    enable: true
    url: {sink_url}/hook
"""
