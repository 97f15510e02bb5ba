# Aqua image scan result as a ServiceNow incident (HTML work notes plus the incident fields).
package postee.servicenow

import data.postee.by_flag
import data.postee.with_default
import future.keywords

################################################ Templates ################################################

tpl := `
<p><b>Name:</b> %s</p>
<p><b>Registry:</b> %s</p>
<p><b>Malware found:</b> %s</p>
<p><b>Sensitive data found:</b> %s</p>
<!-- Stats -->
<h3> Vulnerability summary </h3>
%s
<!-- Assurance controls -->

<h3>Assurance controls</h3>
%s

<!-- Critical severity vulnerabilities -->
%s
<!-- High severity vulnerabilities -->
%s
<!-- Medium severity vulnerabilities -->
%s
<!-- Low severity vulnerabilities -->
%s
<!-- Negligible severity vulnerabilities -->
%s
<p><b>Resourse policy name:</b> %s</p>
<p><b>Resourse policy application scopes:</b> %s</p>

`

summary_tpl := `Name: %s
Registry: %s
Malware found: %s
Sensitive data found: %s

vulnerabilities:
*   critical: %d,
*   high: %d,
*   medium: %d,
*   low: %d,
*   negligible: %d

`

vlnrb_tpl := `
<h3>%s severity vulnerabilities</h3>
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

colored_text_tpl := "<span style='color:%s'>%s</span>"

############################################## Html rendering #############################################

render_table_headers(headers) = row {
	count(headers) > 0
	ths := [th | header := headers[_]; th := sprintf(header_tpl, [header])]
	row := sprintf(row_tpl, [concat("", ths)])
}

# no headers: no header row
render_table_headers(headers) = "" {
	count(headers) == 0
}

render_table(headers, content_array) = s {
	rows := [tr |
		cells := content_array[_]
		tds := [td | ctext := cells[_]; td := sprintf(cell_tpl, [ctext])]
		tr := sprintf(row_tpl, [concat("", tds)])
	]
	s := sprintf(table_tpl, [concat("", array.concat([render_table_headers(headers)], rows))])
}

render_vlnrb(severity, list) = "" {
	count(list) == 0
}

render_vlnrb(severity, list) = s {
	count(list) > 0
	headers := ["Vulnerability ID", "Resource name", "Installed version", "Fix version"]
	s := sprintf(vlnrb_tpl, [severity, render_table(headers, list)])
}

############################################## Data #############################################

vln_list(severity) = [[vln.name, item.resource.name, item.resource.version, fix] |
	some item in input.resources
	some vln in item.vulnerabilities
	vln.aqua_severity == severity
	fix := with_default(vln, "fix_version", "none")
]

severity_colors := [
	["critical", "#c00000"],
	["high", "#e0443d"],
	["medium", "#f79421"],
	["low", "#e1c930"],
	["negligible", "green"],
]

vln_count(name) = with_default(input.vulnerability_summary, name, 0)

severity_stats := [[name, colored] |
	some pair in severity_colors
	name := pair[0]
	colored := sprintf(colored_text_tpl, [pair[1], format_int(vln_count(name), 10)])
]

assurance_controls := [[format_int(i + 1, 10), check.control, check.policy_name, status] |
	some i, check in with_default(input.image_assurance_results, "checks_performed", [])
	status := by_flag("FAIL", "PASS", with_default(check, "failed", false))
]

malware := by_flag("Yes", "No", input.scan_options.scan_malware)

sensitive := by_flag("Yes", "No", input.scan_options.scan_sensitive_data)

# ServiceNow severity: 1 = high, 2 = medium, 3 = low.
default result_severity := "3"

result_severity := "1" {
	vln_count("critical") + vln_count("high") > 0
} else := "2" {
	vln_count("medium") > 0
}

title := sprintf("Aqua security | image | %s | Scan report", [input.image])

url := sprintf("%s/#/images/%s/%s/vulns", [
	input.postee.AquaServer,
	urlquery.encode(input.registry),
	urlquery.encode(input.image),
]) {
	input.postee.AquaServer != ""
}

result_date := format_int(input.scan_started.seconds, 10)

result_category := "Security Image Scan results"

result_subcategory := "Security incident"

result_assigned_to := concat(";", with_default(input, "application_scope_owners", []))

result_assigned_group := concat(";", with_default(input, "application_scope", []))

result_summary := sprintf(summary_tpl, [
	input.image,
	input.registry,
	malware,
	sensitive,
	vln_count("critical"),
	vln_count("high"),
	vln_count("medium"),
	vln_count("low"),
	vln_count("negligible"),
])

result := sprintf(tpl, [
	input.image,
	input.registry,
	malware,
	sensitive,
	render_table([], severity_stats),
	render_table(["#", "Control", "Policy Name", "Status"], assurance_controls),
	render_vlnrb("Critical", vln_list("critical")),
	render_vlnrb("High", vln_list("high")),
	render_vlnrb("Medium", vln_list("medium")),
	render_vlnrb("Low", vln_list("low")),
	render_vlnrb("Negligible", vln_list("negligible")),
	with_default(input, "response_policy_name", ""),
	sprintf("%v", [with_default(input, "application_scope", [])]),
])
