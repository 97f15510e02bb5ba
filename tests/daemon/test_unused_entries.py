"""A daemon starts on a config whose unused entries are incomplete (issue #12, point 2).

Postee's shipped `cfg.yaml` has a `url:` template with no URL that no route uses, and actions that no
route lists. `postee check` names them in warnings and exits 0; the daemon starts, does not fetch,
compile or build any of them, and delivers through the routes that work.
"""

import subprocess
import sys

import trio

from tests.daemon.helpers import pipeline_settled, running_node
from tests.helpers.http_sink import open_http_sink


def config(hook_url: str, template_url: str) -> str:
    return f"""
routes:
  - name: to-hook
    actions: [hook]
    template: raw-json
templates:
  - name: raw-json
    rego-package: postee.rawmessage.json
  - name: custom-email
    url:
  - name: remote-unused
    url: {template_url}
  - name: legacy-unused
    legacy-scan-renderer: pdf
actions:
  - name: hook
    type: webhook
    enable: true
    url: {hook_url}
  - name: hook-without-url
    type: webhook
    enable: true
  - name: my-exec
    type: exec
    enable: true
    input-file: /nowhere/script.sh
  - name: my-future
    type: carrier-pigeon
    enable: true
  - name: my-jira
    type: jira
    enable: false
"""


def test_postee_check_warns_with_paths_and_succeeds(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config("http://127.0.0.1:9/hook", "http://127.0.0.1:9/template.rego"))
    result = subprocess.run([sys.executable, "-m", "postee", "check", "--cfgfile", str(cfg)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert ("warning: templates[1] (name: custom-email): a template needs one of body, url, rego-package or "
            "legacy-scan-renderer (no route uses it: ignored)") in out
    assert "warning: templates[3] (name: legacy-unused).legacy-scan-renderer: unknown layout type 'pdf'" in out
    assert "warning: actions[1] (name: hook-without-url).url: required (no route uses it: ignored)" in out
    assert "warning: actions[2] (name: my-exec).input-file: file not found: /nowhere/script.sh" in out
    assert "warning: actions[3] (name: my-future).type: unknown action type 'carrier-pigeon'" in out
    assert "OK (1 routes, 4 templates, 5 actions)" in out


async def test_the_daemon_starts_and_never_touches_unused_entries(tmp_path):
    async with open_http_sink() as hook, open_http_sink() as template_server:
        cfg = config(f"{hook.url}/hook", f"{template_server.url}/template.rego")
        async with running_node(tmp_path, cfg) as (node, client):
            assert set(node.pipeline.actions) == {"hook"}  # the unused actions were not built
            assert (await client.post("/", content=b'{"image": "alpine"}')).status_code == 200
            (request,) = await hook.wait_for(1)
            assert request.json() == {"image": "alpine"}
            with trio.fail_after(10):
                while not pipeline_settled(node, 1):
                    await trio.sleep(0.02)
        assert template_server.requests == []  # the unused `url:` template was never fetched
