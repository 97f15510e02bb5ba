"""The runner keys file (`--controller-runner-keys`): each runner's name and its NKey public key.

A YAML mapping, one line per runner, as `postee nkey --name NAME FILE` prints it:

    postee-runner-1: UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4
    postee-runner-2: UBVEQIUUACB4X4VMDZ5UYLUP3OMNEQ6MBNYJCZDFV6XTN2ZWR4WH2GBQ

Only public keys belong here: the file is not a secret (a seed found in it is refused, without
echoing it). Each runner then connects with its own seed file (`--runner-seed-file`), and the
controller's nats-server lets it act only as itself (`postee.bus.permissions`).
"""

from __future__ import annotations

import os

import yaml

from postee.bus.nkeys_util import NKeyError, validate_public_key

__all__ = ["MAX_KEYS_FILE_SIZE", "RunnerKeysError", "read_runner_keys"]

MAX_KEYS_FILE_SIZE = 4 * 1024 * 1024


class RunnerKeysError(ValueError):
    """The runner keys file is unusable; the message names the file and the entry."""


def read_runner_keys(path: str | os.PathLike[str]) -> tuple[tuple[str, str], ...]:
    """(runner name, public key) for each entry of the file at `path`. Blocking: call it from a thread."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEYS_FILE_SIZE + 1)
    except OSError as exc:
        raise RunnerKeysError(f"cannot read runner keys file {where!r}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_KEYS_FILE_SIZE:
        raise RunnerKeysError(f"runner keys file {where!r} is larger than {MAX_KEYS_FILE_SIZE} bytes")
    try:
        parsed = yaml.safe_load(data) if data.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise RunnerKeysError(f"runner keys file {where!r} is not YAML{at}") from None
    if parsed is None:  # empty, or comments only: no runner yet
        return ()
    if not isinstance(parsed, dict):
        raise RunnerKeysError(f"runner keys file {where!r}: expected 'runner-name: PUBLIC_KEY' lines")
    entries: list[tuple[str, str]] = []
    owners: dict[str, str] = {}
    for name, key in parsed.items():
        if not isinstance(name, str) or not name.strip():
            raise RunnerKeysError(f"runner keys file {where!r}: {name!r} is not a runner name")
        if not isinstance(key, str):
            raise RunnerKeysError(f"runner keys file {where!r}, runner {name!r}: the value must be a public key")
        try:
            key = validate_public_key(key)
        except NKeyError as exc:
            raise RunnerKeysError(f"runner keys file {where!r}, runner {name!r}: {exc}") from None
        if not key.startswith("U"):
            raise RunnerKeysError(f"runner keys file {where!r}, runner {name!r}: a user key (U...) is expected")
        if key in owners:
            raise RunnerKeysError(f"runner keys file {where!r}: runners {owners[key]!r} and {name!r} have the same "
                                  "key; each runner needs its own")
        owners[key] = name
        entries.append((name, key))
    return tuple(entries)
