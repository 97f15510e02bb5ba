"""A controller checks a runner action's shape, not the runner's own files, kubeconfig or Docker TLS.

An exec script, an HTTP body file or a kubeconfig that exists only on the runner's host must not stop
the controller from starting; a standalone node, which runs the action itself, still checks them.
"""

import os
import subprocess
import sys

import yaml

from postee.config import Severity, parse_config

CONFIG = """
routes:
  - name: local-response
    actions: [kill-it, notify-it, label-it]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: kill-it
    type: exec
    enable: true
    runs-on: runner-1
    input-file: /only/on/the/runner/kill.sh
  - name: notify-it
    type: http
    enable: true
    runs-on: runner-1
    url: http://127.0.0.1:9/hook
    body-file: /only/on/the/runner/body.txt
  - name: label-it
    type: kubernetes
    enable: true
    runs-on: runner-1
    kube-config-file: /only/on/the/runner/kubeconfig
    kube-namespace: default
    kube-label-selector: app=web
    kube-actions:
      labels:
        quarantined: "true"
"""

MISSING_KEY = CONFIG.replace("    input-file: /only/on/the/runner/kill.sh\n", "")


def errors(text: str, *, controller: bool) -> list[str]:
    _, problems = parse_config(yaml.safe_load(text), environ={}, defer_runs_on_env=controller)
    return [str(p) for p in problems if p.severity is Severity.ERROR]


def test_the_controller_does_not_look_for_a_runner_action_s_local_files():
    assert errors(CONFIG, controller=True) == []


def test_a_standalone_node_still_checks_them():
    found = errors(CONFIG, controller=False)
    assert any("actions[0] (name: kill-it).input-file" in e and "file not found" in e for e in found), found
    assert any("actions[1] (name: notify-it).body-file" in e for e in found), found
    assert any("actions[2]" in e and "kube" in e for e in found), found


def test_the_controller_still_checks_the_shape():
    found = errors(MISSING_KEY, controller=True)
    assert any("actions[0]" in e and "exec-script" in e for e in found), found


def test_postee_check_as_a_controller(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.replace("url: http://127.0.0.1:9/hook", "url: $RUNNER_ONLY_HOOK"))
    env = {"PATH": os.environ.get("PATH", "")}

    def check(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "postee", "check", "--cfgfile", str(cfg), *flags],
                              env=env, capture_output=True, text=True, timeout=60)

    as_controller = check("--controller-mode")
    assert as_controller.returncode == 0, as_controller.stdout + as_controller.stderr
    standalone = check()
    assert standalone.returncode == 1
    assert "environment variable RUNNER_ONLY_HOOK is not set" in standalone.stdout
