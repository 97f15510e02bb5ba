"""Config problems name the entry as the user wrote it (issue #12, point 4).

`actions[9].token: required` is exact but makes the user count entries; the path says
`actions[9] (name: a-splunk).token: required`, for routes, templates and actions alike. A name that
is not a string (YAML `name: 123`, a list, a boolean) is left out of the path.
"""

import yaml

from postee.config import Severity, parse_config


def errors_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    _, problems = parse_config(yaml.safe_load(text), environ=environ or {})
    return [str(p) for p in problems if p.severity is Severity.ERROR]


def warnings_of(text: str) -> list[str]:
    _, problems = parse_config(yaml.safe_load(text), environ={})
    return [str(p) for p in problems if p.severity is Severity.WARNING]


CFG = """
routes:
  - name: to-splunk
    actions: [a-splunk, stdout]
    template: raw
  - name: r-typo
    actions: [stdout]
    template: rawjson
    plugins:
      aggregate-message-timeout: soon
templates:
  - name: raw
    rego-package: postee.rawmessage.json
  - name: t-broken
    legacy-scan-renderer: pdf
actions:
  - name: stdout
    type: stdout
    enable: true
  - name: a-splunk
    type: splunk
    enable: true
    url: https://splunk.example.com
  - name: a-hook
    type: webhook
    enable: true
    url: $HOOK_URL
"""
CFG = CFG.replace("actions: [a-splunk, stdout]", "actions: [a-splunk, stdout, a-hook]")


def test_action_problems_name_the_action():
    errors = errors_of(CFG)
    assert "actions[1] (name: a-splunk).token: required" in errors
    assert "actions[2] (name: a-hook).url: environment variable HOOK_URL is not set" in errors


def test_route_problems_name_the_route():
    errors = errors_of(CFG)
    assert "routes[1] (name: r-typo).template: unknown template 'rawjson' (did you mean 'raw'?)" in errors
    assert any(e.startswith("routes[1] (name: r-typo).plugins.aggregate-message-timeout: ") for e in errors), errors


def test_template_problems_name_the_template():
    text = CFG.replace("template: rawjson", "template: t-broken")
    errors = errors_of(text)
    assert any(e.startswith("templates[1] (name: t-broken).legacy-scan-renderer: unknown layout type 'pdf'")
               for e in errors), errors


def test_unknown_keys_and_duplicates_name_the_entry_too():
    text = CFG.replace("  - name: r-typo\n", "  - name: r-typo\n    serialise-actions: true\n") + """  - name: stdout
    type: stdout
    enable: true
"""
    errors, warnings = errors_of(text), warnings_of(text)
    assert any(e.startswith("actions[3] (name: stdout).name: duplicate action name 'stdout' "
                            "(first at actions[0] (name: stdout))") for e in errors), errors
    assert ("warning: routes[1] (name: r-typo).serialise-actions: unknown key 'serialise-actions' is ignored "
            "(did you mean 'serialize-actions'?)") in warnings


def test_a_name_that_is_not_a_string_is_left_out():
    text = """
routes:
  - name: [not, a, string]
    actions: [nope]
  - name: 12
    actions: [nope]
actions:
  - name: true
    type: webhook
    enable: true
"""
    errors = errors_of(text)
    assert any(e.startswith("routes[0].name: expected a string") for e in errors), errors
    assert any(e.startswith("routes[0].actions[0]: unknown action 'nope'") for e in errors), errors
    assert any(e.startswith("routes[1].actions[0]: unknown action 'nope'") for e in errors), errors
    # an action no route can name: a warning (see test_unused_entries), its path without the name
    assert any(w.startswith("warning: actions[0].name: expected a string") for w in warnings_of(text))


def test_a_name_with_control_characters_is_quoted():
    text = 'routes:\n  - name: "two\\nlines"\n    actions: [nope]\n'
    assert "routes[0] (name: 'two\\nlines').actions[0]: unknown action 'nope'" in errors_of(text)
