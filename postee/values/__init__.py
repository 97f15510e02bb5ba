"""Value syntaxes shared by the config, the pipeline and the actions.

Durations ("2 d", "1h30m"), sizes ("10MB"), event keys from dotted paths (route dedup, PagerDuty's
dedup key, printed as Go's `%v` does), `event.input.<path>` references, and the name of a JSON
value's kind for error messages. They are a leaf: nothing here imports from the rest of `postee`,
so config, pipeline and actions can all depend on it without depending on each other.
"""
