"""A migrating user's first step: Postee's own default `cfg.yaml` (tests/fixtures/postee/cfg.yaml, with every
route, template and action kind it ships, the three legacy renderers and the empty `url:` template
included) passes `postee check` with warnings only, and the daemon starts on it and delivers an Aqua
scan through a legacy template."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import trio

import postee
from tests.daemon.helpers import wait_until_ready
from tests.daemon.test_process import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
POSTEE_CFG = (FIXTURES / "postee" / "cfg.yaml").read_text()
AQUA_INPUT = (FIXTURES / "legacy" / "inputs" / "aqua-input.json").read_bytes()


#: Postee ships its `rego-filters/` directory beside the config; ours, under the names its cfg.yaml uses.
FILTERS = {
    "Allow-Image-Name.rego": "allow-image-name.rego",
    "Ignore-Image-Name.rego": "ignore-image-name.rego",
    "Allow-Registry.rego": "allow-registry.rego",
    "Ignore-Registry.rego": "ignore-registry.rego",
    "Policy-Only-Fix-Available.rego": "only-fix-available.rego",
    "Policy-Min-Vulnerability.rego": "min-vulnerability-severity.rego",
}


def deploy(tmp_path: Path, cfg_text: str) -> Path:
    """The config and, beside it (the working directory), `./rego-filters/`, as a Postee deployment has them."""
    bundled = Path(postee.__file__).parent / "filters"
    filters = tmp_path / "rego-filters"
    filters.mkdir()
    for name, ours in FILTERS.items():
        (filters / name).write_text((bundled / ours).read_text())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(cfg_text)
    return cfg


def start_daemon(tmp_path: Path, cfg: Path, port: int, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "postee", "--cfgfile", str(cfg), "--url", f"127.0.0.1:{port}", "--tls", "off",
             "--rego-workers", "1"],
            env=clean_env(tmp_path), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTEE_", "AQUAALERT_"))}
    env["PATH_TO_DB"] = str(tmp_path / "db" / "webhooks.db")
    return env


def test_postee_check_gives_warnings_only(tmp_path):
    cfg = deploy(tmp_path, POSTEE_CFG)
    result = subprocess.run([sys.executable, "-m", "postee", "check", "--cfgfile", str(cfg)], capture_output=True,
                            text=True, timeout=120, env=clean_env(tmp_path), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "templates[6] (name: custom-email)" in output  # the empty url: template, named, as a warning
    assert "error" not in output.lower().replace("0 error", ""), output


async def test_the_daemon_runs_postees_config_and_delivers_through_a_legacy_template(tmp_path):
    # The only change: the stdout route renders with the legacy html renderer instead of raw-json.
    cfg = deploy(tmp_path, POSTEE_CFG.replace("  actions: [ stdout ]\n  template: raw-json",
                                              "  actions: [ stdout ]\n  template: legacy", 1))
    port = free_port()
    log = tmp_path / "postee.log"
    proc = start_daemon(tmp_path, cfg, port, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await wait_until_ready(proc, client, f"http://127.0.0.1:{port}", timeout=60, log=log.read_text)
            assert (await client.post("/", content=AQUA_INPUT)).status_code == 200
            expected = "<p>Image name: all-in-one:3.5.19223</p>"
            with trio.fail_after(30):
                while expected not in log.read_text():
                    await trio.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert log.read_text().count("<p>Image name: all-in-one:3.5.19223</p>") == 1
