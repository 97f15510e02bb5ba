# trivy-operator VulnerabilityReport (Kubernetes custom resource) as Slack blocks.
package postee.trivyoperator.slack

import future.keywords

# Slack rejects a section with more than 10 fields: 2 header fields + 4 rows of 2.
rows_per_section := 4

severities := ["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]

image := sprintf("%s:%s", [input.report.artifact.repository, input.report.artifact.tag])

mrkdwn(text) = {"type": "mrkdwn", "text": text}

divider := {"type": "divider"}

summary_counts := [
	["Critical", "criticalCount"],
	["High", "highCount"],
	["Medium", "mediumCount"],
	["Low", "lowCount"],
	["Unknown", "unknownCount"],
]

header_blocks := [
	{"type": "header", "text": {"type": "plain_text", "text": sprintf(
		"Vulnerability issue with image:%s in namespace %s",
		[image, input.metadata.namespace],
	)}},
	divider,
	{"type": "context", "elements": [mrkdwn("*Summary totals:*")]},
	{"type": "context", "elements": [e |
		some c in summary_counts
		e := mrkdwn(sprintf("%s: *%d*", [c[0], object.get(input.report.summary, c[1], 0)]))
	]},
	divider,
]

vln_list(severity) = [[link, versions] |
	some v in input.report.vulnerabilities
	v.severity == severity
	link := sprintf("<%s|%s>", [v.primaryLink, v.vulnerabilityID])
	versions := sprintf("%s / %s / %s", [v.resource, v.installedVersion, v.fixedVersion])
]

severity_blocks(severity) = [] {
	count(vln_list(severity)) == 0
}

severity_blocks(severity) = blocks {
	list := vln_list(severity)
	count(list) > 0
	headers := [mrkdwn("*Vulnerability ID*"), mrkdwn("*Resource / Version / Fixed version*")]
	chunks := [{"type": "section", "fields": array.concat(headers, fields)} |
		some n in numbers.range(0, ceil(count(list) / rows_per_section) - 1)
		rows := array.slice(list, n * rows_per_section, (n + 1) * rows_per_section)
		fields := [mrkdwn(cell) | cell := rows[_][_]]
	]
	heading := {"type": "section", "text": mrkdwn(sprintf("*%s severity vulnerabilities*", [severity]))}
	blocks := array.concat(array.concat([heading], chunks), [divider])
}

title := sprintf("Vulnerability scan report %s", [image])

result := array.concat(header_blocks, [block | some severity in severities; some block in severity_blocks(severity)])
