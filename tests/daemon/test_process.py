"""The daemon as a real process: signals, draining, exit codes, the example config."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.daemon.helpers import webhook_route
from tests.helpers.http_sink import Reply, open_http_sink

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_postee(tmp_path: Path, cfg_text: str, port: int, *extra: str) -> subprocess.Popen:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(cfg_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTEE_", "AQUAALERT_"))}
    env["PATH_TO_DB"] = str(tmp_path / "db" / "webhooks.db")
    return subprocess.Popen(
        [sys.executable, "-m", "postee", "--cfgfile", str(cfg), "--url", f"127.0.0.1:{port}", "--tls", "off",
         "--rego-workers", "1", *extra],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


async def wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen) -> None:
    with trio.fail_after(60):
        while True:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.1)


async def test_sigterm_drains_queued_events_then_exits_cleanly(tmp_path):
    async with open_http_sink(default=Reply(200, delay=0.05)) as sink:
        cfg = webhook_route(f"{sink.url}/hook", serialize=True)
        port = free_port()
        proc = start_postee(tmp_path, cfg, port, "--stop-grace", "30")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                await wait_ready(client, proc)
                for i in range(20):
                    assert (await client.post("/", content=f'{{"n": {i}}}'.encode())).status_code == 200
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(60):
                while proc.poll() is None:
                    await trio.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
        stderr = proc.stderr.read().decode()
        assert proc.returncode == 0, stderr[-3000:]
        received = sorted(int(r.text.split(":")[1].strip(" }\n")) for r in sink.requests)
        assert received == list(range(20)), stderr[-3000:]


async def test_sighup_reloads_and_a_bad_config_keeps_the_running_one(tmp_path):
    async with open_http_sink() as sink:
        v1 = webhook_route(f"{sink.url}/v1")
        port = free_port()
        proc = start_postee(tmp_path, v1, port)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                await wait_ready(client, proc)
                (tmp_path / "cfg.yaml").write_text(v1.replace("/v1", "/v2"))
                proc.send_signal(signal.SIGHUP)
                with trio.fail_after(30):
                    while 'postee_config_reloads_total{outcome="ok"} 1.0' not in (await client.get("/metrics")).text:
                        await trio.sleep(0.05)
                await client.post("/", content=b"{}")
                (request,) = await sink.wait_for(1)
                assert request.path == "/v2"
                (tmp_path / "cfg.yaml").write_text("routes: [{name: r, actions: [gone], template: raw}]")
                proc.send_signal(signal.SIGHUP)
                with trio.fail_after(30):
                    while 'postee_config_reloads_total{outcome="rejected"} 1.0' not in (
                        await client.get("/metrics")
                    ).text:
                        await trio.sleep(0.05)
                await client.post("/", content=b"{}")
                await sink.wait_for(2)
                assert sink.requests[1].path == "/v2"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


async def test_invalid_config_exits_with_every_problem(tmp_path):
    cfg = """
routes:
  - name: r
    actions: [slak]
    template: nope
actions:
  - name: slack
    type: slack
    enable: true
"""
    proc = start_postee(tmp_path, cfg, free_port())
    with trio.fail_after(60):
        while proc.poll() is None:
            await trio.sleep(0.05)
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 2
    assert "routes[0] (name: r).actions[0]: unknown action 'slak' (did you mean 'slack'?)" in stderr
    assert "routes[0] (name: r).template: unknown template 'nope'" in stderr


def test_check_command_reports_paths_and_exit_status(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("""
routes:
  - name: r
    actions: [out, slak]
    template: raw
    serialise-actions: true
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: out
    type: stdout
    enable: true
  - name: hook
    type: webhook
    enable: true
""")
    result = subprocess.run([sys.executable, "-m", "postee", "check", "--cfgfile", str(bad)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "routes[0] (name: r).actions[1]: unknown action 'slak'" in result.stdout
    assert "warning: routes[0] (name: r).serialise-actions: unknown key 'serialise-actions' is ignored " \
           "(did you mean 'serialize-actions'?)" in result.stdout
    assert "warning: actions[1] (name: hook).url: required (no route uses it: ignored)" in result.stdout
    good = subprocess.run([sys.executable, "-m", "postee", "check", "--cfgfile", str(ROOT / "examples" / "cfg.yaml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "OK (3 routes, 2 templates, 3 actions)" in good.stdout


def test_apikey_command_prints_the_persisted_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTEE_")}
    env["PATH_TO_DB"] = str(tmp_path / "db" / "webhooks.db")
    first = subprocess.run([sys.executable, "-m", "postee", "apikey"], env=env, capture_output=True, text=True,
                           timeout=60, check=True).stdout.strip()
    second = subprocess.run([sys.executable, "-m", "postee", "apikey"], env=env, capture_output=True, text=True,
                            timeout=60, check=True).stdout.strip()
    assert first == second and len(first) >= 20
    env["POSTEE_API_KEY"] = "from-env"
    assert subprocess.run([sys.executable, "-m", "postee", "apikey"], env=env, capture_output=True, text=True,
                          timeout=60, check=True).stdout.strip() == "from-env"


def test_unwritable_db_path_names_path_to_db(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTEE_")}
    env["PATH_TO_DB"] = str(blocker / "sub" / "webhooks.db")
    result = subprocess.run([sys.executable, "-m", "postee", "apikey"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0
    assert "PATH_TO_DB" in result.stderr

