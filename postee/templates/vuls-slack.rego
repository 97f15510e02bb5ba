# Aqua image scan result as Slack blocks.
package postee.vuls.slack

import data.postee.by_flag
import data.postee.with_default
import future.keywords

# Slack rejects a section with more than 10 fields: 2 header fields + 4 rows of 2.
rows_per_section := 4

severities := ["critical", "high", "medium", "low", "negligible"]

section(text) = {"type": "section", "text": {"type": "mrkdwn", "text": text}}

field(text) = {"type": "mrkdwn", "text": text}

# Two-column field sections: a header pair, then the rows, at most `rows_per_section` per section.
field_sections(headers, rows) = [{"type": "section", "fields": array.concat(header_fields, fields)} |
	header_fields := [field(h) | some h in headers]
	some n in numbers.range(0, max([ceil(count(rows) / rows_per_section), 1]) - 1)
	chunk := array.slice(rows, n * rows_per_section, (n + 1) * rows_per_section)
	fields := [field(cell) | cell := chunk[_][_]]
]

vln_list(severity) = [[vln.name, sprintf("%s/%s/%s", [item.resource.name, item.resource.version, fix])] |
	some item in input.resources
	some vln in item.vulnerabilities
	vln.aqua_severity == severity
	fix := with_default(vln, "fix_version", "none")
]

severity_blocks(severity) = [] {
	count(vln_list(severity)) == 0
}

severity_blocks(severity) = blocks {
	list := vln_list(severity)
	count(list) > 0
	headers := ["*Vulnerability ID*", "*Resource name / Installed version / Fix version*"]
	heading := section(sprintf("*%s severity vulnerabilities*", [severity]))
	blocks := array.concat([heading], field_sections(headers, list))
}

stats := {"type": "section", "fields": [f |
	some severity in severities
	some text in [
		sprintf("*%s*", [upper(severity)]),
		sprintf("*%d*", [with_default(input.vulnerability_summary, severity, 0)]),
	]
	f := field(text)
]}

assurance_rows := [[sprintf("%d %s", [i + 1, check.control]), sprintf("%s / %s", [check.policy_name, status])] |
	some i, check in with_default(input.image_assurance_results, "checks_performed", [])
	status := by_flag("FAIL", "PASS", with_default(check, "failed", false))
]

malware_rows := [[sprintf("%d %s", [i + 1, with_default(m, "malware", "")]), sprintf("%s / %s", [with_default(m, "hash", ""), with_default(m, "path", "")])] |
	some i, m in with_default(input, "malware", [])
]

# Package that merges several of these messages when the route aggregates them.
aggregation_pkg := "postee.vuls.slack.aggregation"

title := sprintf("%s vulnerability scan report", [input.image])

url := sprintf("%s/#/images/%s/%s/vulns", [
	trim_right(input.postee.AquaServer, "/"),
	urlquery.encode(input.registry),
	urlquery.encode(input.image),
]) {
	input.postee.AquaServer != ""
}

result := array.concat(
	array.concat(
		array.concat(
			[
				section(sprintf("Image name: %s", [input.image])),
				section(sprintf("Registry: %s", [input.registry])),
				section(by_flag("Image is non-compliant", "Image is compliant", with_default(input, "disallowed", false))),
				section(sprintf("Malware found: %s", [by_flag("Yes", "No", input.scan_options.scan_malware)])),
				section(sprintf("Sensitive data found: %s", [by_flag("Yes", "No", input.scan_options.scan_sensitive_data)])),
				stats,
				section("*Assurance controls*"),
			],
			field_sections(["*#* *Control*", "*Policy Name* / *Status*"], assurance_rows),
		),
		array.concat(
			[section("*Found vulnerabilities*")],
			[block | some severity in severities; some block in severity_blocks(severity)],
		),
	),
	array.concat([section("Malware")], field_sections(["*# Malware*", "*Hash / Path*"], malware_rows)),
)
