"""`postee check` names the missing required keys of every action type (issue: each action at load time)."""

import pytest
import yaml

from postee.config import Severity, parse_config

REQUIRED = {
    "webhook": ["url"],
    "http": ["url"],
    "slack": ["url"],
    "teams": ["url"],
    "email": ["host", "sender", "recipients"],
    "jira": ["url", "project-key"],
    "serviceNow": ["user", "password"],
    "splunk": ["url", "token"],
    "opsgenie": ["token"],
    "pagerduty": ["pagerduty-routing-key"],
    "dependencytrack": ["url", "dependency-track-api-key"],
    "nexusIq": ["url", "user", "password", "organization-id"],
    "kubernetes": ["kube-namespace", "kube-label-selector", "kube-actions"],
    "docker": ["docker-image-name"],
}


@pytest.mark.parametrize(("action_type", "keys"), sorted(REQUIRED.items()))
def test_missing_required_keys_are_named_with_their_path(action_type, keys):
    text = (f"routes:\n  - name: r\n    actions: [a]\n    template: t\ntemplates:\n  - name: t\n    body: x\n"
            f"actions:\n  - name: a\n    type: {action_type}\n    enable: true\n")
    _, problems = parse_config(yaml.safe_load(text), environ={})
    errors = [str(p) for p in problems if p.severity is Severity.ERROR]
    for key in keys:
        assert any(e.startswith(f"actions[0] (name: a).{key}") for e in errors), (key, errors)


def test_every_action_type_of_postee_is_known():
    from postee.actions.registry import known_types

    assert set(known_types()) >= {
        "stdout", "webhook", "http", "exec", "slack", "teams", "email", "jira", "servicenow", "splunk",
        "opsgenie", "pagerduty", "dependencytrack", "nexusiq", "awssecurityhub", "kubernetes", "docker",
    }
