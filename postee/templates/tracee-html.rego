# Tracee runtime detection (a signature match) as an HTML message.
package postee.tracee.html

import data.postee.with_default
import future.keywords

tpl := `
<p><b>Signature ID:</b> %s</p>
<p><b>Signature:</b> %s</p>
<p><b>Description:</b> %s</p>
<p><b>Severity:</b> %s</p>
<p><b>MITRE ATT&CK:</b> %s</p>
<p><b>Process name:</b> %s</p>
<p><b>Event:</b> %s</p>
<p><b>Hostname:</b> %s</p>
<p><b>Container ID:</b> %s</p>
<p><b>Container image:</b> %s</p>
<p><b>Pod:</b> %s</p>
`

# Tracee signature severities are numbers 0..4.
severity_names := ["info", "low", "medium", "high", "critical"]

properties := with_default(input.SigMetadata, "Properties", {})

severity := severity_names[properties.Severity] {
	is_number(properties.Severity)
} else := "unknown"

context := with_default(input, "Context", {})

pod := sprintf("%s/%s", [context.podNamespace, context.podName]) {
	context.podName != ""
} else := ""

title := sprintf("Tracee Detection - %s", [input.SigMetadata.Name])

result := sprintf(tpl, [
	input.SigMetadata.ID,
	input.SigMetadata.Name,
	with_default(input.SigMetadata, "Description", ""),
	severity,
	with_default(properties, "MITRE ATT&CK", ""),
	with_default(context, "processName", ""),
	with_default(context, "eventName", ""),
	with_default(context, "hostName", ""),
	with_default(context, "containerId", ""),
	with_default(context, "containerImage", ""),
	pod,
])
