"""An entry no route uses never stops the daemon (issue #12, point 2).

Postee's shipped `cfg.yaml` has a `url:` template with no URL that no route references; Postee logs
it and runs. Here: a template or an enabled action that no route uses and that could not work is a
warning naming it (with its path), not an error. The same entry used by a route stays an error.
"""

import yaml

from postee.config import Severity, parse_config

UNUSED_NOTE = "no route uses it"


def problems(text: str, environ: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    _, found = parse_config(yaml.safe_load(text), environ=environ or {})
    return ([str(p) for p in found if p.severity is Severity.ERROR],
            [str(p) for p in found if p.severity is Severity.WARNING])


POSTEE_DEFAULT_LIKE = """
name: tenant
routes:
  - name: stdout
    actions: [stdout]
    template: raw-json
  - name: no-template
    input: contains(input.image, "alpine")
templates:
  - name: raw-html
    rego-package: postee.rawmessage.html
  - name: legacy
    legacy-scan-renderer: html
  - name: custom-email
    url:
  - name: odd-renderer
    legacy-scan-renderer: pdf
  - name: raw-json
    rego-package: postee.rawmessage.json
  - rego-package: postee.vuls.html
actions:
  - name: stdout
    type: stdout
    enable: true
  - name: my-jira
    type: jira
    enable: true
    url: https://jira.example.com
  - name: my-hook
    type: webhook
    enable: true
    url: $UNSET_HOOK_URL
  - name: my-future
    type: carrier-pigeon
    enable: true
  - name: off-slack
    type: slack
    enable: false
"""


def test_unused_incomplete_templates_are_warnings_with_their_path():
    errors, warnings = problems(POSTEE_DEFAULT_LIKE)
    assert errors == []
    assert ("warning: templates[2] (name: custom-email): a template needs one of body, url, rego-package or "
            f"legacy-scan-renderer ({UNUSED_NOTE}: ignored)") in warnings
    assert any(w.startswith("warning: templates[3] (name: odd-renderer).legacy-scan-renderer: unknown layout type")
               and w.endswith(f"({UNUSED_NOTE}: ignored)") for w in warnings), warnings
    assert f"warning: templates[5].name: required ({UNUSED_NOTE}: ignored)" in warnings


def test_unused_incomplete_actions_are_warnings_with_their_path():
    errors, warnings = problems(POSTEE_DEFAULT_LIKE)
    assert errors == []
    assert any(w.startswith("warning: actions[1] (name: my-jira).") and w.endswith(f"({UNUSED_NOTE}: ignored)")
               for w in warnings), warnings
    assert ("warning: actions[2] (name: my-hook).url: environment variable UNSET_HOOK_URL is not set "
            f"({UNUSED_NOTE}: ignored)") in warnings
    assert any(w.startswith("warning: actions[3] (name: my-future).type: unknown action type 'carrier-pigeon'")
               for w in warnings), warnings


def test_the_same_entries_used_by_a_route_stay_errors():
    used = POSTEE_DEFAULT_LIKE.replace(
        "    actions: [stdout]\n    template: raw-json\n",
        "    actions: [stdout]\n    template: raw-json\n"
        "  - name: uses-all\n    actions: [my-jira, my-hook, my-future]\n    template: custom-email\n"
        "  - name: uses-odd\n    template: odd-renderer\n",
    )
    errors, _ = problems(used)
    assert ("templates[2] (name: custom-email): a template needs one of body, url, rego-package or "
            "legacy-scan-renderer") in errors
    assert any(e.startswith("templates[3] (name: odd-renderer).legacy-scan-renderer: unknown layout type")
               for e in errors), errors
    assert any(e.startswith("actions[1] (name: my-jira).") for e in errors), errors
    assert "actions[2] (name: my-hook).url: environment variable UNSET_HOOK_URL is not set" in errors
    assert any(e.startswith("actions[3] (name: my-future).type: unknown action type") for e in errors), errors
    assert not any(UNUSED_NOTE in e for e in errors)


def test_a_duplicate_name_is_an_error_only_when_a_route_uses_it():
    unused = POSTEE_DEFAULT_LIKE.replace("  - name: legacy\n", "  - name: raw-html\n")
    errors, warnings = problems(unused)
    assert errors == []
    assert any(w.startswith("warning: templates[1] (name: raw-html).name: duplicate template name 'raw-html'")
               for w in warnings), warnings
    used = POSTEE_DEFAULT_LIKE.replace("  - name: legacy\n", "  - name: raw-json\n")
    errors, _ = problems(used)
    assert any(e.startswith("templates[4] (name: raw-json).name: duplicate template name 'raw-json'")
               for e in errors), errors
