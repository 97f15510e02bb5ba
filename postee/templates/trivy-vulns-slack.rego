# Trivy report (`trivy ... --format json`) as Slack blocks: one section per severity and the totals.
package postee.vuls.trivy.slack

import data.postee.with_default
import future.keywords

# Slack rejects a section with more than 10 fields: 2 header fields + 4 rows of 2.
rows_per_section := 4

severities := ["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]

section(text) = {"type": "section", "text": {"type": "mrkdwn", "text": text}}

field(text) = {"type": "mrkdwn", "text": text}

vln_list(severity) = [[vln.VulnerabilityID, fixes] |
	some i, j
	vln := input.Results[i].Vulnerabilities[j]
	vln.Severity == severity
	fixes := sprintf("%s / %s / %s", [vln.PkgName, vln.InstalledVersion, with_default(vln, "FixedVersion", "none")])
]

vln_count(severity) = count([1 |
	some i, j
	input.Results[i].Vulnerabilities[j].Severity == severity
])

# The vulnerabilities of one severity as field sections of at most `rows_per_section` rows each.
severity_blocks(severity) = [] {
	count(vln_list(severity)) == 0
}

severity_blocks(severity) = blocks {
	list := vln_list(severity)
	count(list) > 0
	headers := [field("*Vulnerability ID*"), field("*Resource name / Installed version / Fix version*")]
	chunks := [{"type": "section", "fields": array.concat(headers, fields)} |
		some n in numbers.range(0, ceil(count(list) / rows_per_section) - 1)
		rows := array.slice(list, n * rows_per_section, (n + 1) * rows_per_section)
		fields := [field(cell) | cell := rows[_][_]]
	]
	blocks := array.concat([section(sprintf("*%s severity vulnerabilities*", [severity]))], chunks)
}

totals := {"type": "section", "fields": [f |
	some name in ["Critical", "High", "Medium", "Low", "Unknown"]
	some k in [1, 2]
	f := field(by_column(name, k))
]}

by_column(name, 1) = name

by_column(name, 2) = sprintf("*%d*", [vln_count(upper(name))])

# Package that merges several of these messages when the route aggregates them.
aggregation_pkg := "postee.vuls.slack.trivy.aggregation"

title := "Vulnerability scan report"

result := array.concat(
	array.concat(
		[
			section(sprintf("Artifact name: %s", [input.ArtifactName])),
			section(sprintf("Type: %s", [input.ArtifactType])),
			section("*Found vulnerabilities*"),
		],
		[block | some severity in severities; some block in severity_blocks(severity)],
	),
	[section("*Found vulnerabilities*"), totals],
)
