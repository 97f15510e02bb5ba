"""Who may say what on the bus: the nats-server permissions of the controller and of each runner.

The server enforces them, so nothing here depends on our own code trusting a payload:

* **the controller** may subscribe everywhere, and publish replies and announcements only (it answers
  config requests, reads every runner's reports, announces changes; it answers only in the inbox of
  the runner a request came from, see `postee.roles.controller`);
* **a runner with its own NKey** (`--controller-runner-keys`) may publish only under
  `postee.runner.<name>.` and subscribe only to its own inbox and to configuration announcements: it
  cannot read another runner's slice or reports, send under another name, answer a config request
  or announce a change;
* **the shared seed** of Postee's controller/runner mode (`--controller-seed-file`, the same seed on
  every runner) may do what any runner may, under any name: fetch any runner's slice (secrets
  included), report as any runner, read replies to other shared-seed runners. It still cannot answer
  a config request, reply in anyone's inbox or announce a change, and it cannot touch the subjects or
  inbox of a runner that has its own key.

Replies are the reason inboxes matter: a requester names its reply subject, and whoever may publish
there can answer. Only the controller may publish on `_INBOX.`, so a config reply always comes from
it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from postee.bus.protocol import (
    CONFIG_CHANGED_SUBJECT,
    DISPATCH_NOTICE_PREFIX,
    LEGACY_SUBJECTS,
    RUNNER_SUBJECT_PREFIX,
    dispatch_notice_subject,
    runner_config_subject,
    runner_inbox_prefix,
    subject_token,
)

__all__ = ["Permissions", "controller_permissions", "runner_permissions", "shared_seed_permissions"]


@attrs.frozen
class Permissions:
    """One user's permissions, as nats-server's `permissions` block holds them."""

    publish_allow: tuple[str, ...] = ()
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()

    def as_config(self) -> dict[str, Any]:
        """The `permissions` value (a mapping nats-server reads, JSON being a subset of its syntax)."""
        block: dict[str, Any] = {}
        for name, allow, deny in (("publish", self.publish_allow, self.publish_deny),
                                  ("subscribe", self.subscribe_allow, self.subscribe_deny)):
            entry: dict[str, list[str]] = {"allow": list(allow)}
            if deny:
                entry["deny"] = list(deny)
            block[name] = entry
        return block


def controller_permissions() -> Permissions:
    """Subscribe anywhere; publish only what a controller sends: replies (in inboxes) and announcements.
    A requester names its reply subject and the server does not check it, so a controller that could
    publish anywhere could be made to publish on a runner's own subjects."""
    return Permissions(
        publish_allow=("_INBOX.>", CONFIG_CHANGED_SUBJECT, f"{CONFIG_CHANGED_SUBJECT}.>",
                       f"{DISPATCH_NOTICE_PREFIX}.>"),
        subscribe_allow=(">",),
    )


def runner_permissions(runner: str) -> Permissions:
    """A runner with its own key: its own subjects, its own inbox, the announcements for it."""
    return Permissions(
        publish_allow=(f"{RUNNER_SUBJECT_PREFIX}.{subject_token(runner)}.>",),
        subscribe_allow=(f"{runner_inbox_prefix(runner)}.>", CONFIG_CHANGED_SUBJECT, runner_config_subject(runner),
                         dispatch_notice_subject(runner)),
    )


def shared_seed_permissions(keyed_runners: Iterable[str] = ()) -> Permissions:
    """The shared seed: any runner's subjects (Postee's shared ones too), any inbox, every announcement,
    except what belongs to a runner with its own key."""
    keyed = sorted(set(keyed_runners))
    return Permissions(
        publish_allow=(*LEGACY_SUBJECTS.values(), f"{RUNNER_SUBJECT_PREFIX}.>"),
        publish_deny=tuple(f"{RUNNER_SUBJECT_PREFIX}.{subject_token(name)}.>" for name in keyed),
        subscribe_allow=("_INBOX.>", CONFIG_CHANGED_SUBJECT, f"{CONFIG_CHANGED_SUBJECT}.>",
                         f"{DISPATCH_NOTICE_PREFIX}.>"),
        subscribe_deny=tuple(
            pattern for name in keyed
            for pattern in (f"{runner_inbox_prefix(name)}.>", runner_config_subject(name),
                            dispatch_notice_subject(name))
        ),
    )
