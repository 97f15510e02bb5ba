# trivy-operator VulnerabilityReport (Kubernetes custom resource) as a Jira issue in wiki markup.
package postee.trivyoperator.jira

import future.keywords

tpl := `
h1. Image: %s in namespace %s

h4. Summary totals:
%s

%s
%s
%s
%s
%s
`

vlnrb_tpl := `
h4. %s severity vulnerabilities
%s
`

table_tpl := `
%s
`

header_tpl := `|| %s `

cell_tpl := `| %s `

colored_count_tpl := `%s: {color:%s}%d{color}`

# Jira colours per severity: name, colour, count in the report's summary.
summary_colors := [
	["critical", "#c00000", "criticalCount"],
	["high", "#e0443d", "highCount"],
	["medium", "#f79421", "mediumCount"],
	["low", "#e1c930", "lowCount"],
	["unknown", "#505f79", "unknownCount"],
]

image := sprintf("%s:%s", [input.report.artifact.repository, input.report.artifact.tag])

summary := sprintf("|%s|", [concat("|", [s |
	some c in summary_colors
	s := sprintf(colored_count_tpl, [c[0], c[1], object.get(input.report.summary, c[2], 0)])
])])

render_table(headers, rows) = s {
	ths := [sprintf(header_tpl, [h]) | some h in headers]
	trs := [tr |
		some cells in rows
		tr := sprintf("\n%s |", [concat("", [sprintf(cell_tpl, [c]) | some c in cells])])
	]
	header_row := sprintf("\n%s ||", [concat("", ths)])
	s := sprintf(table_tpl, [concat("", array.concat([header_row], trs))])
}

vln_list(severity) = [[v.vulnerabilityID, v.title, v.resource, v.installedVersion, v.fixedVersion, v.primaryLink] |
	some v in input.report.vulnerabilities
	v.severity == severity
]

render_vlnrb(severity, list) = "" {
	count(list) == 0
}

render_vlnrb(severity, list) = s {
	count(list) > 0
	headers := ["ID", "Title", "Resource", "Installed version", "Fixed version", "Url"]
	s := sprintf(vlnrb_tpl, [severity, render_table(headers, list)])
}

title := sprintf("Vulnerability issue with image %s in namespace %s", [image, input.metadata.namespace])

result := sprintf(tpl, [
	image,
	input.metadata.namespace,
	summary,
	render_vlnrb("Critical", vln_list("CRITICAL")),
	render_vlnrb("High", vln_list("HIGH")),
	render_vlnrb("Medium", vln_list("MEDIUM")),
	render_vlnrb("Low", vln_list("LOW")),
	render_vlnrb("Unknown", vln_list("UNKNOWN")),
])
