"""`/ui` in a real browser: headless Chromium (Debian's package), driven by Playwright from PyPI.

A controller and a runner (real HTTP listeners on 127.0.0.1 port 0, SQLite files, an in-process bus,
recording actions, one of which fails on purpose) run in the test's Trio loop; the browser script runs
in a worker thread (Playwright's sync API) and posts the events to the runner's webhook itself, so
the page sees them arrive live. It asserts what an operator would look at: the runner shown as up,
every execution in the table (failed ones marked), the filters, the events with their routes, and
no script or connection blocked by the page's Content-Security-Policy. Then it saves a screenshot
(the README's picture: `POSTEE_DASHBOARD_SCREENSHOT=docs/dashboard.png` writes it there too).

Chromium comes from `scripts/test` (`apt-get install chromium` when missing); the test fails, not
skips, when it is not there.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import trio

from actors.memory_transport import InMemoryBus
from postee.embed import ControllerOptions, NodeOptions, NodeParts, RunnerOptions, open_controller, open_runner
from postee.sim.recording import Conduct, Recordings, recording_factory

CHROMIUM = os.environ.get("POSTEE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
"""The machine's network is closed: without the background-networking flags Chromium keeps trying."""

CONFIG = """
routes:
  - name: quarantine
    input: contains(input.image, "prod")
    actions: [kill-pod, open-ticket]
    template: raw
  - name: audit
    actions: [audit-log]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: kill-pod
    type: exec
    enable: true
    runs-on: runner-1
    exec-script: "true"
    retries: 0
  - name: audit-log
    type: webhook
    enable: true
    runs-on: runner-1
    url: http://127.0.0.1:9/audit
    retries: 0
  - name: open-ticket
    type: webhook
    enable: true
    url: http://127.0.0.1:9/ticket
    retries: 0
"""

IMAGES = ["prod/api:1.4", "dev/tools:2", "prod/web:7", "prod/db:13", "staging/queue:3"]
"""Three match `quarantine` (kill-pod on the runner, open-ticket on the controller); all match `audit`."""
FAILING = "prod/web:7"
"""Its `kill-pod` fails (the recorders' plan): the table must mark that row."""


def plan_failing():
    """`kill-pod` fails for the second event it is given: FAILING (events are posted one at a time)."""
    seen: list[str] = []

    def plan(node: str, action: str, event_id: str, attempt: int) -> Conduct:
        if action != "kill-pod":
            return Conduct(delay=0.02)
        if event_id not in seen:
            seen.append(event_id)
        return Conduct("fail", delay=0.05) if seen.index(event_id) == 1 else Conduct(delay=0.02)
    return plan


def options(tmp_path: Path, name: str) -> NodeOptions:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(CONFIG)
    return NodeOptions(cfgfile=str(cfg), http_bind="127.0.0.1:0", https_bind=None, db_path=str(tmp_path / f"{name}.db"),
                       rego_isolation="thread", rego_workers=1, environ={})


def browse(controller_url: str, key: str, runner_url: str, screenshot: Path) -> dict:
    """The browser's side, in a worker thread: open the page, post the events, check what it shows."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)  # a shared 2-core CI machine: assertions wait up to 20 s
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
            page.set_default_timeout(20_000)
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            # a wrong key: the page asks for the key and says why; the right one typed in opens it
            probe = browser.new_page()
            probe.goto(f"{controller_url}/ui#key=wrong")
            expect(probe.locator("#key-dialog")).to_be_visible()
            expect(probe.locator("#key-error")).to_have_text("The node refused this key.")
            probe.locator("#key-input").fill(key)
            probe.locator("#key-form button").click()
            expect(probe.get_by_test_id("live")).to_have_text("live")
            probe.close()
            page.goto(f"{controller_url}/ui#key={key}")  # the key in the fragment, as the README says
            expect(page.get_by_test_id("live")).to_have_text("live")
            assert "key=" not in page.url  # the key left the address bar (and never reached the server)
            expect(page.get_by_test_id("node")).to_have_text("controller")
            expect(page.locator('tr[data-runner="runner-1"]')).to_have_attribute("data-state", "up")

            with httpx.Client(base_url=runner_url, timeout=10) as client:
                for image in IMAGES:
                    assert client.post("/", content=json.dumps({"image": image})).status_code == 200

            rows = page.locator("#executions-body tr")
            # 5 audit-log + 3 kill-pod on the runner, 3 open-ticket on the controller
            expect(rows).to_have_count(11)
            failed = page.locator("#executions-body tr.failed")
            expect(failed).to_have_count(1)
            expect(failed).to_contain_text("kill-pod")
            expect(failed).to_contain_text("runner-1")
            expect(page.get_by_test_id("failed-count")).to_have_text("1")
            expect(page.locator("#events-body tr")).to_have_count(5)
            # every event's routes are known: three matched both, two only audit
            expect(page.locator("#events-body tr", has_text="quarantine")).to_have_count(3)
            expect(page.locator("#events-body tr", has_text="audit")).to_have_count(5)
            expect(page.locator("#runners-body tr").first).to_contain_text("runner-1")
            expect(page.get_by_test_id("executions-rate")).not_to_have_text("0.0")  # the per-second counters

            page.screenshot(path=str(screenshot), full_page=False)
            assert screenshot.stat().st_size > 10_000
            if os.environ.get("POSTEE_DASHBOARD_SCREENSHOT"):
                shutil.copyfile(screenshot, os.environ["POSTEE_DASHBOARD_SCREENSHOT"])

            page.get_by_test_id("filter-status").select_option("failed")
            expect(rows).to_have_count(1)
            page.get_by_test_id("filter-status").select_option("")
            page.get_by_test_id("filter-node").select_option("controller")
            expect(rows).to_have_count(3)
            expect(page.locator("#executions-body tr", has_text="open-ticket")).to_have_count(3)
            page.get_by_test_id("filter-node").select_option("")
            page.get_by_test_id("filter-route").select_option("audit")
            expect(rows).to_have_count(5)

            # a reload of the page starts from the node's JSON endpoints: the same rows, no duplicates
            page.reload()
            expect(page.get_by_test_id("live")).to_have_text("live")
            expect(page.locator("#executions-body tr")).to_have_count(11)
            expect(page.locator("#executions-body tr.failed")).to_have_count(1)
            # the events' routes come back with them (`/events?bodies=0`), not as "unknown"
            expect(page.locator("#events-body tr", has_text="quarantine")).to_have_count(3)
            expect(page.locator("#events-body tr", has_text="audit")).to_have_count(5)
        finally:
            browser.close()
    return {"problems": problems}


async def test_the_dashboard_shows_a_controller_with_its_runner_live(tmp_path):
    assert shutil.which(CHROMIUM), (
        f"Chromium not found at {CHROMIUM}: `scripts/test` installs it (apt-get install chromium)")
    recordings = Recordings()
    bus = InMemoryBus()
    screenshot = tmp_path / "dashboard.png"
    async with AsyncExitStack() as stack:
        controller = await stack.enter_async_context(open_controller(
            ControllerOptions(options(tmp_path, "controller"), heartbeat_interval=1.0), bus.connect("controller"),
            parts=NodeParts(actions=recording_factory("controller", recordings, plan_failing()))))
        runner = await stack.enter_async_context(open_runner(
            RunnerOptions("runner-1", options(tmp_path, "runner-1"), heartbeat_interval=1.0), bus.connect("runner-1"),
            parts=NodeParts(actions=recording_factory("runner-1", recordings, plan_failing()))))
        with trio.fail_after(90):
            result = await trio.to_thread.run_sync(
                browse, controller.node.urls[0], controller.node.api_key(), runner.node.urls[0], screenshot)
    failed = [c for c in recordings.calls if c.result != "ok"]
    assert [(c.node, c.action) for c in failed] == [("runner-1", "kill-pod")]  # what the page showed as failed
    csp = [p for p in result["problems"] if "Content Security Policy" in p or "Refused" in p]
    assert not csp, csp


pytestmark = pytest.mark.timeout(120)
