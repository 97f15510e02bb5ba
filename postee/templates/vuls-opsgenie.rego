# Aqua image scan result as an Opsgenie alert: a short plain-text description (Opsgenie shows text).
package postee.vuls.opsgenie

import data.postee.by_flag
import data.postee.with_default
import future.keywords

tpl := `Image name: %s
Registry: %s
%s
Malware found: %s
Sensitive data found: %s

Vulnerabilities:
%s
%s`

severities := ["critical", "high", "medium", "low", "negligible"]

counts := concat("\n", [sprintf("%s: %d", [s, with_default(input.vulnerability_summary, s, 0)]) | some s in severities])

# The most severe findings first; Opsgenie truncates long descriptions, so this list is capped.
max_listed := 20

findings := [sprintf("%s %s %s %s (fix: %s)", [upper(s), vln.name, item.resource.name, item.resource.version, fix]) |
	some s in severities
	some item in input.resources
	some vln in item.vulnerabilities
	vln.aqua_severity == s
	fix := with_default(vln, "fix_version", "none")
]

listed := concat("\n", array.slice(findings, 0, max_listed))

title := sprintf("%s vulnerability scan report", [input.image])

url := sprintf("%s/#/images/%s/%s/vulns", [
	trim_right(input.postee.AquaServer, "/"),
	urlquery.encode(input.registry),
	urlquery.encode(input.image),
]) {
	input.postee.AquaServer != ""
}

result := sprintf(tpl, [
	input.image,
	input.registry,
	by_flag("Image is non-compliant", "Image is compliant", with_default(input, "disallowed", false)),
	by_flag("Yes", "No", input.scan_options.scan_malware),
	by_flag("Yes", "No", input.scan_options.scan_sensitive_data),
	counts,
	listed,
])
