"""Actions: what a route does with a rendered message (print it, POST it, run a script, ...).

`base` is the contract (on the data of `model`), `settings` declares and reads an action's settings,
`registry` maps Postee's `type:` to a class, `retry` runs sends with retries and timeouts,
`httpclient` is the HTTP side the HTTP actions share; then one module per action type, with the
parts of the larger ones beside it (`jira_api`, `smtp` and `mx` for email, `kubeconfig`).
"""

from postee.actions.base import (
    Action,
    ActionConfigError,
    ActionError,
    ActionSpec,
    Delivery,
    Problem,
    SendResult,
)
from postee.actions.registry import (
    UnknownActionType,
    action_class,
    build_action,
    known_types,
    register,
    unknown_settings,
    validate_spec,
)
from postee.actions.retry import AttemptReport, DeliveryReport, RetryPolicy, send_with_retries

__all__ = [
    "Action",
    "ActionConfigError",
    "ActionError",
    "ActionSpec",
    "AttemptReport",
    "Delivery",
    "DeliveryReport",
    "Problem",
    "RetryPolicy",
    "SendResult",
    "UnknownActionType",
    "action_class",
    "build_action",
    "known_types",
    "register",
    "send_with_retries",
    "unknown_settings",
    "validate_spec",
]
