# Aqua image scan result as an HTML report (email, Teams, ServiceNow-like sinks).
package postee.vuls.html

import data.postee.by_flag
import data.postee.with_default
import future.keywords

################################################ Templates ################################################

tpl := `
<p>Image name: %s</p>
<p>Registry: %s</p>
<p>%s</p>
<p>%s</p>
<p>%s</p>
<!-- stats -->
%s
<h2>Assurance controls</h2>
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

severity_stats := [[name, colored] |
	some pair in severity_colors
	name := pair[0]
	colored := sprintf(colored_text_tpl, [pair[1], format_int(with_default(input.vulnerability_summary, name, 0), 10)])
]

assurance_controls := [[format_int(i + 1, 10), check.control, check.policy_name, status] |
	some i, check in with_default(input.image_assurance_results, "checks_performed", [])
	status := by_flag("FAIL", "PASS", with_default(check, "failed", false))
]

compliance := by_flag("Image is non-compliant", "Image is compliant", with_default(input, "disallowed", false))

malware := sprintf("Malware found: %s", [by_flag("Yes", "No", input.scan_options.scan_malware)])

sensitive := sprintf("Sensitive data found: %s", [by_flag("Yes", "No", input.scan_options.scan_sensitive_data)])

# Package that merges several of these messages when the route aggregates them.
aggregation_pkg := "postee.vuls.html.aggregation"

title := sprintf("%s vulnerability scan report", [input.image])

url := sprintf("%s/#/images/%s/%s/vulns", [
	input.postee.AquaServer,
	urlquery.encode(input.registry),
	urlquery.encode(input.image),
]) {
	input.postee.AquaServer != ""
}

result := sprintf(tpl, [
	input.image,
	input.registry,
	compliance,
	malware,
	sensitive,
	render_table([], severity_stats),
	render_table(["#", "Control", "Policy Name", "Status"], assurance_controls),
	render_vlnrb("Critical", vln_list("critical")),
	render_vlnrb("High", vln_list("high")),
	render_vlnrb("Medium", vln_list("medium")),
	render_vlnrb("Low", vln_list("low")),
	render_vlnrb("Negligible", vln_list("negligible")),
])
