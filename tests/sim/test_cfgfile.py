"""`postee sim --cfgfile`: a user's configuration across its fleet (its `runs-on` names), its actions recorders.

Checked with Postee's controller/runner example from the seed document, and with a configuration whose
dedup key is one of the event's own fields and whose aggregate template does not name its events.
"""

from __future__ import annotations

import logging

import pytest
import structlog

from postee.sim.scenario import ALL_FAULTS
from postee.sim.simulate import SimOptions, SimulationError, simulate
from tests.roles.test_memory_bus import seed_config

OWN_KEYS = """
name: own keys
routes:
  - name: by-image
    input: contains(input.image, "sim/")
    actions: [notify-edge-1, notify-edge-2, central]
    template: raw
    plugins:
      unique-message-props: ["image"]
      unique-message-timeout: 20s
  - name: digest
    input: contains(input.image, "sim/scan")
    actions: [mail]
    template: raw
    plugins:
      aggregate-message-number: 3
      aggregate-message-timeout: 30s
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: notify-edge-1
    type: exec
    enable: true
    runs-on: edge-1
    exec-script: "true"
  - name: notify-edge-2
    type: exec
    enable: true
    runs-on: edge-2
    exec-script: "true"
  - name: central
    type: webhook
    enable: true
    url: https://hooks.example.com/central
  - name: mail
    type: webhook
    enable: true
    url: https://hooks.example.com/mail
"""


@pytest.fixture(autouse=True)
def quiet_logs():
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    yield
    structlog.reset_defaults()


def test_the_seed_documents_example_holds_every_invariant_under_every_fault(tmp_path):
    cfg = tmp_path / "seed.yaml"
    cfg.write_text(seed_config())
    result = simulate(SimOptions(seed=5, events=150, faults=frozenset(ALL_FAULTS), cfgfile=str(cfg)))
    assert result["runners"] == 1  # postee-runner-1, from its runs-on
    assert all(result["invariants"].values()), result["violations"]
    assert result["injected"]["reloads"] == 2 and result["lost"] == 0


def test_a_users_dedup_keys_are_its_own_and_unnamed_aggregates_are_said_unchecked(tmp_path):
    cfg = tmp_path / "own.yaml"
    cfg.write_text(OWN_KEYS)
    result = simulate(SimOptions(seed=2, events=200, faults=frozenset(ALL_FAULTS), cfgfile=str(cfg)))
    assert result["runners"] == 2
    assert all(result["invariants"].values()), result["violations"]
    assert result["checked"]["dedup_decisions"] > 0  # by `image`, the route's own key
    assert any("route 'digest'" in line for line in result["unchecked"])


def test_a_configuration_that_cannot_run_is_reported_not_simulated(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(OWN_KEYS.replace("rego-package: postee.rawmessage.json", "rego-package: no.such.package"))
    with pytest.raises(SimulationError, match="controller could not start"):
        simulate(SimOptions(seed=1, events=10, cfgfile=str(cfg)))
