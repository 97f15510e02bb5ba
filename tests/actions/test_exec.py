"""The exec action with real /bin/sh subprocesses."""

import os
import signal

import pytest
import trio

from actors.testing import wait_until
from postee.actions import ActionConfigError, ActionError, ActionSpec, Delivery, build_action, send_with_retries
from postee.actions.base import MAX_OUTPUT_CHARS, TRUNCATION_MARK

DESCRIPTION = "CVE-2024-1 found in 'alpine:3.18' — \"quoted\" $NOT_EXPANDED"
DELIVERY = Delivery(content={"title": "t", "description": DESCRIPTION})


def exec_spec(**settings):
    return ActionSpec(name="run", type="exec", settings=settings)


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (in a container nobody may reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def leftovers():
    """Pid files of background children; any child still alive at the end is killed (if a test failed)."""
    pid_files = []
    yield pid_files.append
    for pid_file in pid_files:
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass


async def test_script_sees_the_event_and_env_and_writes_a_file(tmp_path):
    script = 'printf "%s" "$POSTEE_EVENT" > "$OUT/event.txt"\nprintf "%s" "$GREETING" > "$OUT/env.txt"\necho done'
    spec = exec_spec(**{"exec-script": script, "env": [f"OUT={tmp_path}", "GREETING=hello=world"]})
    async with build_action(spec) as action:
        result = await action.send(DELIVERY)
    assert (result.status, result.output) == (0, "done\n")
    assert (tmp_path / "event.txt").read_text() == DESCRIPTION
    assert (tmp_path / "env.txt").read_text() == "hello=world"


def environment_of(output: str) -> dict[str, str]:
    """`env -0` output as a dict."""
    return dict(item.split("=", 1) for item in output.split("\0") if item)


@pytest.fixture
def secrets_in_the_environment(monkeypatch):
    """The process environment of a real deployment: credentials and secrets next to PATH and HOME."""
    for name, value in {
        "POSTEE_API_KEY": "api-key-123",
        "POSTEE_INGEST_TOKEN": "ingest-token-456",
        "SLACK_WEBHOOK_SECRET": "hooks-secret-789",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "INHERITED_FOR_TEST": "yes",
        "LANG": "C.UTF-8",
        "HOME": "/home/postee-test",
    }.items():
        monkeypatch.setenv(name, value)


async def test_a_script_gets_a_clean_environment(secrets_in_the_environment):
    spec = exec_spec(**{"exec-script": "env -0", "env": ["GREETING=hello", "POSTEE_EVENT=overridden"]})
    seen = environment_of((await build_action(spec).send(DELIVERY)).output)
    seen.pop("PWD", None)  # the shell sets it itself
    assert seen == {
        "PATH": os.environ["PATH"],
        "HOME": "/home/postee-test",
        "LANG": "C.UTF-8",
        "GREETING": "hello",
        "POSTEE_EVENT": DESCRIPTION,  # the event wins over an `env` entry of the same name
    }


async def test_inherit_env_names_the_variables_a_script_may_see(secrets_in_the_environment, monkeypatch):
    monkeypatch.delenv("HOME")
    spec = exec_spec(**{"exec-script": "env -0", "inherit-env": ["INHERITED_FOR_TEST", "NOT_SET_ANYWHERE"]})
    seen = environment_of((await build_action(spec).send(DELIVERY)).output)
    seen.pop("PWD", None)
    assert set(seen) == {"PATH", "LANG", "POSTEE_EVENT", "INHERITED_FOR_TEST"}
    assert seen["INHERITED_FOR_TEST"] == "yes"


def test_inherit_env_takes_variable_names():
    with pytest.raises(ActionConfigError) as info:
        build_action(exec_spec(**{"exec-script": "true", "inherit-env": ["OK_NAME", "NOT=A NAME", "1X"]}))
    assert [key for key, _ in info.value.problems] == ["inherit-env[1]", "inherit-env[2]"]


async def test_input_file_runs_with_stdout_and_stderr_captured(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text('echo "to stdout"\necho "to stderr" >&2\n')
    result = await build_action(exec_spec(**{"input-file": str(script)})).send(DELIVERY)
    assert "to stdout\n" in result.output and "to stderr\n" in result.output


async def test_non_zero_exit_is_a_failure_that_is_not_retried(tmp_path):
    counter = tmp_path / "runs"
    spec = exec_spec(**{"exec-script": f'echo run >> "{counter}"\necho "went wrong" >&2\nexit 3', "retries": 3})
    action = build_action(spec)
    report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status) == (False, 1, 3)
    assert not report.error.retryable
    assert "exited with status 3" in report.error.message
    assert report.output == "went wrong\n"
    assert counter.read_text() == "run\n"


async def test_timeout_kills_the_whole_process_group(tmp_path, leftovers):
    pid_file = tmp_path / "child.pid"
    leftovers(pid_file)
    script = f'echo started\nsleep 300 &\necho $! > "{pid_file}"\nwait'
    action = build_action(exec_spec(**{"exec-script": script, "timeout": "0.5s"}))
    started = trio.current_time()
    with pytest.raises(ActionError) as info:
        await action.send(DELIVERY)
    assert trio.current_time() - started < 5.0
    assert info.value.retryable
    assert "timed out after 0.5s" in info.value.message
    assert info.value.output == "started\n"
    child = int(pid_file.read_text())
    await wait_until(lambda: not alive(child), timeout=5.0)


async def test_cancelling_a_send_kills_the_process_group(tmp_path, leftovers):
    pid_file = tmp_path / "child.pid"
    leftovers(pid_file)
    script = f'sleep 300 &\necho $! > "{pid_file}"\nwait'
    action = build_action(exec_spec(**{"exec-script": script}))
    with trio.move_on_after(0.5) as scope:
        await action.send(DELIVERY)
    assert scope.cancelled_caught
    child = int(pid_file.read_text())
    await wait_until(lambda: not alive(child), timeout=5.0)


async def test_a_timed_out_script_is_retried(tmp_path):
    counter = tmp_path / "runs"
    script = f'echo run >> "{counter}"\n[ "$(wc -l < "{counter}")" -ge 2 ] || exec sleep 300\necho finally'
    spec = exec_spec(**{"exec-script": script, "timeout": "0.5s", "retries": 2, "retry-backoff": "0.01s"})
    report = await send_with_retries(build_action(spec), DELIVERY)
    assert (report.ok, report.attempts, report.output) == (True, 2, "finally\n")


async def test_output_is_bounded():
    result = await build_action(exec_spec(**{"exec-script": "yes postee | head -c 3000000"})).send(DELIVERY)
    assert result.status == 0
    assert len(result.output) == MAX_OUTPUT_CHARS + len(TRUNCATION_MARK)
    assert result.output.startswith("postee\npostee\n")


async def test_a_script_that_ignores_stdin_and_exits_early():
    big = "exit 0\n" + "#" * 1_000_000
    result = await build_action(exec_spec(**{"exec-script": big})).send(DELIVERY)
    assert result.status == 0


async def test_a_background_child_holding_the_output_does_not_block(tmp_path, leftovers):
    pid_file = tmp_path / "child.pid"
    leftovers(pid_file)
    script = f'sleep 300 &\necho $! > "{pid_file}"\necho parent done'
    action = build_action(exec_spec(**{"exec-script": script, "timeout": "30s"}))
    started = trio.current_time()
    result = await action.send(DELIVERY)  # the child is left running: only a timeout or a cancellation kills it
    assert trio.current_time() - started < 10.0
    assert result.output == "parent done\n"
    assert alive(int(pid_file.read_text()))


async def test_a_description_too_large_for_the_environment_is_a_clear_failure():
    huge = Delivery(content={"description": "x" * 200_000})
    with pytest.raises(ActionError) as info:
        await build_action(exec_spec(**{"exec-script": "true"})).send(huge)
    assert not info.value.retryable
    assert "too large for the POSTEE_EVENT variable" in info.value.message


async def test_a_description_with_a_nul_character_fails_cleanly():
    with pytest.raises(ActionError) as info:
        await build_action(exec_spec(**{"exec-script": "true"})).send(Delivery(content={"description": "a\0b"}))
    assert not info.value.retryable
