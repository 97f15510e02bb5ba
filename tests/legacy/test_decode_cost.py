"""What decoding an event costs grows with its size, not faster (an event is untrusted input).

Several keys that differ only in case fill one field, and each array is decoded on top of the slice Go
already holds. Copying that slice for every key made the cost (longest array) x (number of keys):
quadratic in the body size, so a body of a few MiB held a worker for minutes. The test compares the
time for a crafted body with the time for one twice its size, measured in the same run, so it does not
depend on the machine's speed: linear work doubles, quadratic work quadruples.
"""

import time

from postee.legacy import render_content

KEY = "application_scope_owners"
RUNS = 3
MAX_RATIO = 3.0
"""Twice the input may take at most this many times as long (linear: ~2, quadratic: ~4)."""


def case_spellings(count: int) -> list[str]:
    """`count` distinct spellings of KEY that differ only in the case of its letters (all lower first)."""
    letters = [index for index, char in enumerate(KEY) if char.isalpha()]
    spellings = []
    for mask in range(count):
        chars = list(KEY)
        for bit, position in enumerate(letters):
            if mask >> bit & 1:
                chars[position] = chars[position].upper()
        spellings.append("".join(chars))
    return spellings


def crafted_event(size: int) -> dict:
    """One long array under the key spelled in capitals (applied first: it sorts first), then many
    one-element arrays under other spellings, each decoded on top of the long one's backing array."""
    event = {KEY.upper(): [""] * (20 * size)}
    event.update(dict.fromkeys(case_spellings(5 * size), ["owner"]))
    return event


def render_seconds(event: dict) -> float:
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        content = render_content(event, "slack", "")
        best = min(best, time.perf_counter() - start)
    assert content["owners"] == "owner"  # the field really was decoded from these keys
    return best


def test_many_case_spellings_of_an_array_key_cost_linear_time():
    small, large = crafted_event(500), crafted_event(1000)
    ratio = render_seconds(large) / render_seconds(small)
    assert ratio < MAX_RATIO, f"twice the input took {ratio:.1f} times as long"


def test_stale_elements_survive_in_place_decoding():
    # The long array's elements past the later arrays' length stay in the backing array (Go reuses it),
    # and only the live ones are shown.
    event = {"Malware": [{"malware": f"m{n}", "path": f"/p{n}"} for n in range(5)]}
    event.update({spelling: [{"hash": "h"}] for spelling in ("mALWARE", "malwarE")})
    event["malware"] = [{}, {}, {}]
    text = render_content(event, "jira", "")["description"].splitlines()
    start = text.index("h2. Malware")
    assert text[start + 2 : start + 6] == ["|0|m0|h|/p0|", "|1|m1||/p1|", "|2|m2||/p2|", ""]
