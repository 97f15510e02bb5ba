# trivy-operator VulnerabilityReport as a CycloneDX 1.4 JSON BOM, for the Dependency-Track action
# (which uploads `result` as the project's BOM; the project is named after `title`).
package postee.trivyoperator.dependencytrack

import future.keywords

image := sprintf("%s:%s", [input.report.artifact.repository, input.report.artifact.tag])

bom_ref(v) = sprintf("%s@%s", [v.resource, v.installedVersion])

# One component per (package, version), however many vulnerabilities it has: a set removes the
# duplicates (and sorts them), the array is what CycloneDX wants.
components := [c | some c in {component(v) | some v in input.report.vulnerabilities}]

component(v) = {"type": "library", "bom-ref": bom_ref(v), "name": v.resource, "version": v.installedVersion}

vulnerabilities := [vuln |
	some v in input.report.vulnerabilities
	vuln := {
		"id": v.vulnerabilityID,
		"source": {"name": "NVD", "url": v.primaryLink},
		"ratings": [{"score": object.get(v, "score", 0), "severity": lower(v.severity), "method": "other"}],
		"description": object.get(v, "title", ""),
		"affects": [{"ref": bom_ref(v)}],
	}
]

bom := {
	"bomFormat": "CycloneDX",
	"specVersion": "1.4",
	"version": 1,
	"metadata": {
		"component": {"type": "container", "bom-ref": image, "name": input.report.artifact.repository, "version": input.report.artifact.tag},
		"tools": [{"vendor": input.report.scanner.vendor, "name": input.report.scanner.name, "version": input.report.scanner.version}],
	},
	"components": components,
	"vulnerabilities": vulnerabilities,
}

title := image

result := jsonformat(bom)
