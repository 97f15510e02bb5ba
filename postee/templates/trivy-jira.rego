# Trivy report (`trivy ... --format json`) as a Jira issue in Jira wiki markup.
package postee.trivy.jira

import data.postee.with_default
import future.keywords

################################################ Templates ################################################

tpl := `
h1. Image name: %s
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

cell_tpl := `| %s `

header_tpl := `|| %s `

row_tpl := `
| %s `

############################################## Rendering #############################################

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

vln_list(severity) = [r |
	some i, j
	item := input.Results[i]
	vln := item.Vulnerabilities[j]
	vln.Severity == severity
	r := [
		item.Target,
		vln.Title,
		vln.VulnerabilityID,
		vln.PkgName,
		with_default(vln, "PkgPath", "none"),
		vln.InstalledVersion,
		with_default(vln, "FixedVersion", "none"),
		vln.PrimaryURL,
	]
]

render_vlnrb(severity, list) = "" {
	count(list) == 0
}

render_vlnrb(severity, list) = s {
	count(list) > 0
	headers := ["Layer", "Title", "Vulnerability ID", "Resource name", "Path", "Installed version", "Fix version", "Url"]
	s := sprintf(vlnrb_tpl, [severity, render_table(headers, list)])
}

title := sprintf("%s vulnerability scan report", [input.ArtifactName])

result := sprintf(tpl, [
	input.ArtifactName,
	render_vlnrb("Critical", vln_list("CRITICAL")),
	render_vlnrb("High", vln_list("HIGH")),
	render_vlnrb("Medium", vln_list("MEDIUM")),
	render_vlnrb("Low", vln_list("LOW")),
	render_vlnrb("Unknown", vln_list("UNKNOWN")),
])
