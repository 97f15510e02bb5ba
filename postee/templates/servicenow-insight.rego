# Aqua insight (a risk found on a resource, with its evidence) as a ServiceNow incident.
package postee.servicenow.insight

import data.postee.clamp
import data.postee.with_default
import future.keywords

tpl := `
<!-- Insight Details -->
<h2> <i>Insight Details:</i> </h2>
<p><b>Insight ID:</b> %s</p>
<p><b>Description:</b> %s</p>
<p><b>Impact:</b> %s</p>
<p><b>Severity:</b> %s</p>
<p><b>Found Date:</b> %s</p>
<p><b>Last Scan:</b> %s</p>
<p><b>URL:</b> %s</p>
<!-- TODO  -->
<!-- Resourse Details -->
<h2> <i>Resourse Details:</i> </h2>
<p><b>Resourse ID:</b> %s</p>
<p><b>Resourse Name:</b> %s</p>
<p><b>ARN:</b> %s</p>
<p><b>Extra Info:</b> %v</p>
<!-- Evidence -->
<h2> <i>Evidence:</i> </h2>
<!-- Vulnerabilities -->
%s
<!-- Sensitive data -->
%s
<!-- Recommendation -->
<h2> <i>Recommendation:</i> </h2>
%s
<p><b>Resourse policy name:</b> %s</p>
<p><b>Resourse policy application scopes:</b> %v</p>
`

summary_tpl := `Insight ID: %s
Description: %s
Impact: %s
Severity: %s
Found Date: %s
Last Scan: %s
URL: %s`

evidence_tpl := `
<p>%s</p>
%s
`

# Extra % is required in width:100%
table_tpl := `
<TABLE border='1' style='width: 100%%; border-collapse: collapse;'>
%s
</TABLE>
`

cell_tpl := `<TD style='padding: 5px;'>%s</TD>
`

header_tpl := `<TH style='padding: 5px;'>%s</TH>
`

row_tpl := `
<TR>
%s
</TR>`

render_table(headers, content_array) = s {
	ths := [sprintf(header_tpl, [h]) | some h in headers]
	header_row := sprintf(row_tpl, [concat("", ths)])
	rows := [tr |
		cells := content_array[_]
		tds := [td | ctext := cells[_]; td := sprintf(cell_tpl, [ctext])]
		tr := sprintf(row_tpl, [concat("", tds)])
	]
	s := sprintf(table_tpl, [concat("", array.concat([header_row], rows))])
}

# An evidence section, or nothing when Aqua sent no evidence of that kind (null or []).
render_evidence(name, headers, rows) = "" {
	count(rows) == 0
} else = sprintf(evidence_tpl, [name, render_table(headers, rows)])

evidence_list(kind) = list {
	list := input.evidence[kind]
	is_array(list)
} else = []

vulnerability_rows := [[with_default(v, "name", ""), with_default(v, "resource_name", ""), with_default(v, "severity", "")] |
	some v in evidence_list("vulnerabilities")
]

sensitive_rows := [[s.file_type, s.file_path, s.image] | some s in evidence_list("sensitive_data")]

remediations := [r |
	some kind in ["vulnerabilities_remediation", "sensitive_data_remediation", "malware_remediation",
		"privileged_iam_roles_remediation", "privileged_workloads_remediation"]
	r := input.evidence[kind]
	is_string(r)
	r != ""
]

recommendation := "No Recommendation" {
	count(remediations) == 0
} else := concat("\n", remediations)

# Aqua insight priority, read on ServiceNow's scale: 1 = high, 2 = medium, 3 = low.
priority := clamp(max([with_default(input.insight, "priority", 3), 1]), 3)

severity_names := {1: "high", 2: "medium", 3: "low"}

severity_name := severity_names[priority]

insight_url := sprintf("%s/#/insights/%s", [trim_right(input.postee.AquaServer, "/"), input.insight.id]) {
	input.postee.AquaServer != ""
} else := ""

url := insight_url {
	insight_url != ""
}

title := input.insight.description

result_category := "Security insight"

result_subcategory := with_default(input, "type", "")

result_severity := format_int(priority, 10)

result_date := input.resource.found_date

result_assigned_to := concat(";", with_default(input, "application_scope_owners", []))

result_assigned_group := concat(";", with_default(input, "application_scope", []))

result_summary := sprintf(summary_tpl, [
	input.insight.id,
	input.insight.description,
	input.insight.impact,
	severity_name,
	input.resource.found_date,
	input.resource.last_scanned,
	insight_url,
])

result := sprintf(tpl, [
	input.insight.id,
	input.insight.description,
	input.insight.impact,
	severity_name,
	input.resource.found_date,
	input.resource.last_scanned,
	insight_url,
	input.resource.id,
	input.resource.name,
	input.resource.arn,
	with_default(input.resource, "steps", {}),
	render_evidence("Vulnerabilities", ["Vulnerability", "Resource", "Severity"], vulnerability_rows),
	render_evidence("Sensitive data", ["File Type", "File Path", "Image"], sensitive_rows),
	recommendation,
	with_default(input, "response_policy_name", ""),
	with_default(input, "application_scope", []),
])
