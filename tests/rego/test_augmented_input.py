"""A template's input is the event with `postee.AquaServer` added: spliced into the event's JSON text when
the text is at hand (re-encoding an 8 KB event cost ~0.1 ms per render), the same value either way."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from postee.pipeline.events import parse_event
from postee.rego.render import augment_event, augmented_json

KEYS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
VALUES = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=10)


@given(st.dictionaries(KEYS, VALUES, max_size=5), st.sampled_from(["", "https://aqua.example", 'a"b\\c']),
       st.sampled_from(["compact", "spaced", "trailing"]))
def test_the_spliced_text_reads_as_the_augmented_event(body, server, layout):
    text = {"compact": json.dumps(body, separators=(",", ":")), "spaced": json.dumps(body, indent=2),
            "trailing": json.dumps(body) + " \n"}[layout]
    event = parse_event(text.encode())
    assert json.loads(augmented_json(event.body, server, event.text)) == augment_event(event.body, server)
    assert json.loads(augmented_json(event.body, server)) == augment_event(event.body, server)


def test_an_event_that_has_a_postee_key_is_re_encoded_with_the_servers():
    event = parse_event(b'{"postee": {"AquaServer": "forged"}, "image": "x"}')
    assert json.loads(augmented_json(event.body, "real", event.text))["postee"] == {"AquaServer": "real"}
