"""`$VAR` secrets: strict where the action runs, left as written for a runner, an unset one on a runner
disables only its action."""

from __future__ import annotations

import yaml

from postee.config import Severity, parse_config
from postee.config.env import UnsetSecret, disable_unset, env_keys

CONFIG = """
routes:
  - name: r
    actions: [local-hook, runner-hook, runner-exec]
    template: t
templates:
  - name: t
    body: "x"
actions:
  - name: local-hook
    type: http
    enable: true
    url: $CONTROLLER_URL
  - name: runner-hook
    type: http
    enable: true
    runs-on: runner-1
    url: ${RUNNER_URL}
    timeout: $RUNNER_TIMEOUT
    headers:
      Authorization: ["$RUNNER_TOKEN"]
  - name: runner-exec
    type: exec
    enable: true
    runs-on: runner-1
    env: ["KEY=$NOT_A_REFERENCE"]
    exec-script: "echo hi"
"""


def errors(problems) -> list[str]:
    return [str(p) for p in problems if p.severity is Severity.ERROR]


def test_standalone_resolves_every_action_and_an_unset_variable_is_an_error():
    _, problems = parse_config(yaml.safe_load(CONFIG), environ={"CONTROLLER_URL": "http://c.test/"})
    assert errors(problems) == [
        "actions[1] (name: runner-hook).url: environment variable RUNNER_URL is not set",
        "actions[1] (name: runner-hook).timeout: environment variable RUNNER_TIMEOUT is not set",
        "actions[1] (name: runner-hook).headers.Authorization[0]: environment variable RUNNER_TOKEN is not set",
        "actions[1] (name: runner-hook).url: required",
    ]


def test_a_controller_leaves_runner_secrets_as_written_and_still_checks_the_shape():
    config, problems = parse_config(yaml.safe_load(CONFIG), environ={"CONTROLLER_URL": "http://c.test/"},
                                    defer_runs_on_env=True)
    assert errors(problems) == []
    hook = config.action("runner-hook")
    assert hook.settings["url"] == "${RUNNER_URL}" and hook.settings["headers"] == {"Authorization": ["$RUNNER_TOKEN"]}
    assert config.action("local-hook").settings["url"] == "http://c.test/"  # its own action: resolved
    # a required key that is missing stays an error; a bad value that is not a `$VAR` too
    broken = yaml.safe_load(CONFIG)
    del broken["actions"][1]["url"]
    broken["actions"][2]["timeout"] = "soon"
    _, problems = parse_config(broken, environ={"CONTROLLER_URL": "http://c.test/"}, defer_runs_on_env=True)
    assert [p.path for p in problems if p.severity is Severity.ERROR] == [
        "actions[1] (name: runner-hook).url", "actions[2] (name: runner-exec).timeout"]
    assert errors(problems)[0] == "actions[1] (name: runner-hook).url: required"
    # the controller's own actions stay strict
    _, problems = parse_config(yaml.safe_load(CONFIG), environ={}, defer_runs_on_env=True)
    assert errors(problems) == ["actions[0] (name: local-hook).url: environment variable CONTROLLER_URL is not set",
                                "actions[0] (name: local-hook).url: required"]


def test_env_keys_are_those_holding_a_reference_at_any_depth():
    assert env_keys({"url": "$U", "headers": {"A": ["x", "${T}"]}, "env": ["K=$V"], "n": 3}) == {"url", "headers"}


def test_a_runner_disables_only_the_actions_whose_variable_it_lacks():
    data = yaml.safe_load(CONFIG)
    environ = {"CONTROLLER_URL": "http://c.test/", "RUNNER_URL": "http://r.test/", "RUNNER_TIMEOUT": "5s"}
    changed, unset = disable_unset(data, environ)
    assert unset == [UnsetSecret("runner-hook", "actions[1].headers.Authorization[0]", "RUNNER_TOKEN")]
    assert str(unset[0]) == ("action 'runner-hook' disabled: environment variable RUNNER_TOKEN is not set on this "
                             "runner (actions[1].headers.Authorization[0])")
    assert [a["enable"] for a in changed["actions"]] == [True, False, True]
    assert data["actions"][1]["enable"] is True  # the input is left alone
    config, problems = parse_config(changed, environ=environ)
    assert errors(problems) == []
    assert [a.name for a in config.actions if a.enable] == ["local-hook", "runner-exec"]
    assert disable_unset(data, {"RUNNER_URL": "u", "RUNNER_TIMEOUT": "5s", "RUNNER_TOKEN": "t",
                                "CONTROLLER_URL": "c"})[1] == []
    assert disable_unset(["not", "a", "config"], {}) == (["not", "a", "config"], [])
