# Route filter: take only scans with at least one vulnerability that has a fixed version to upgrade to.
package postee

import future.keywords

# Fixed versions found: Aqua scan, Trivy report, trivy-operator report.
only_fix_available_fixes contains fix {
	some resource in input.resources
	some v in resource.vulnerabilities
	fix := v.fix_version
}

only_fix_available_fixes contains fix {
	some result in input.Results
	some v in result.Vulnerabilities
	fix := v.FixedVersion
}

only_fix_available_fixes contains fix {
	some v in input.report.vulnerabilities
	fix := v.fixedVersion
}

allow {
	some fix in only_fix_available_fixes
	is_string(fix)
	fix != ""
}
