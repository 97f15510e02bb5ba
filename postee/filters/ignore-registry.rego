# Route filter: take events about images from any registry *except* these.
# (Filters are OR-ed, so combine an "ignore" filter only with filters that narrow further inside it.)
package postee

import future.keywords

# Edit me: registry names as Aqua shows them, or registry hosts.
ignore_registry_names := {"Docker Hub", "localhost:5000"}

# The image's registry: Aqua scan (`registry`), trivy-operator report (`report.registry.server`).
ignore_registry_found contains registry {
	registry := input.registry
}

ignore_registry_found contains registry {
	registry := input.report.registry.server
}

ignore_registry_listed {
	some registry in ignore_registry_found
	registry in ignore_registry_names
}

allow {
	count(ignore_registry_found) > 0
	not ignore_registry_listed
}
