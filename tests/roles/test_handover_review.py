from tests.roles.sim_helpers import UNUSED_URL, open_deployment, settle, submit, sim_event, outbox_empty
import trio

CFG = f"""
dispatch-to-runners: true
routes:
  - name: dispatched
    actions: [on-runner, on-controller]
    template: raw-json
templates:
  - name: raw-json
    rego-package: postee.rawmessage.json
actions:
  - name: on-runner
    type: http
    enable: true
    runs-on: runner-1
    url: {UNUSED_URL}/r
  - name: on-controller
    type: http
    enable: true
    url: {UNUSED_URL}/c
"""

async def test_x(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim:
        async with sim.controller(CFG) as controller, sim.runner("runner-1") as runner:
            await submit(runner, sim_event(1))
            await settle(lambda: len(sim.calls(action="on-controller")) == 1)
            await trio.sleep(30)
            print([(c.node, c.action, c.event_id) for c in sim.calls()])
