import io

import pytest
import trio

from postee.actions import ActionError, ActionSpec, Delivery, build_action
from postee.actions.stdout import StdoutAction

SPEC = ActionSpec(name="out", type="stdout")


async def test_prints_the_description_to_stdout(capfd):
    async with build_action(SPEC) as action:
        result = await action.send(Delivery(content={"title": "T", "description": "line 1\nline 2"}))
    assert result.output == ""
    assert capfd.readouterr().out == "line 1\nline 2\n"


async def test_missing_description_prints_an_empty_line():
    stream = io.StringIO()
    action = StdoutAction.from_spec(SPEC, stream=stream)
    await action.send(Delivery(content={"title": "only a title"}))
    assert stream.getvalue() == "\n"


async def test_concurrent_sends_write_whole_messages():
    stream = io.StringIO()
    action = StdoutAction.from_spec(SPEC, stream=stream)
    messages = [f"message {n}: " + "x" * 5000 for n in range(20)]
    async with trio.open_nursery() as nursery:
        for message in messages:
            nursery.start_soon(action.send, Delivery(content={"description": message}))
    assert sorted(stream.getvalue().splitlines()) == sorted(messages)


async def test_a_closed_stream_is_a_failure_not_a_crash():
    stream = io.StringIO()
    stream.close()
    action = StdoutAction.from_spec(SPEC, stream=stream)
    with pytest.raises(ActionError) as info:
        await action.send(Delivery(content={"description": "x"}))
    assert not info.value.retryable
