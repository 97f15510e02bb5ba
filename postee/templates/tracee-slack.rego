# Tracee runtime detection (a signature match) as Slack blocks.
package postee.tracee.slack

import data.postee.with_default
import future.keywords

# Tracee signature severities are numbers 0..4.
severity_names := ["info", "low", "medium", "high", "critical"]

properties := with_default(input.SigMetadata, "Properties", {})

severity := severity_names[properties.Severity] {
	is_number(properties.Severity)
} else := "unknown"

context := with_default(input, "Context", {})

field(text) = {"type": "mrkdwn", "text": text}

# Label/value pairs shown as two-column fields; empty values are left out.
facts := [[label, value] |
	some pair in [
		["Signature ID", input.SigMetadata.ID],
		["Severity", severity],
		["MITRE ATT&CK", with_default(properties, "MITRE ATT&CK", "")],
		["Process", with_default(context, "processName", "")],
		["Event", with_default(context, "eventName", "")],
		["Hostname", with_default(context, "hostName", "")],
		["Container image", with_default(context, "containerImage", "")],
		["Container ID", with_default(context, "containerId", "")],
	]
	label := pair[0]
	value := sprintf("%v", [pair[1]])
	value != ""
]

# Slack allows at most 10 fields per section: 5 facts each.
fact_sections := [{"type": "section", "fields": fields} |
	some n in numbers.range(0, ceil(count(facts) / 5) - 1)
	chunk := array.slice(facts, n * 5, (n + 1) * 5)
	fields := [field(sprintf("*%s:*\n%s", [f[0], f[1]])) | some f in chunk]
]

title := sprintf("Tracee Detection - %s", [input.SigMetadata.Name])

result := array.concat(
	[
		{"type": "header", "text": {"type": "plain_text", "text": title}},
		{"type": "section", "text": field(with_default(input.SigMetadata, "Description", input.SigMetadata.Name))},
	],
	array.concat(fact_sections, [{"type": "divider"}]),
)
