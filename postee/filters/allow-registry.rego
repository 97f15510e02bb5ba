# Route filter: take only events about images from these registries.
package postee

import future.keywords

# Edit me: registry names as Aqua shows them, or registry hosts.
allow_registry_names := {"Aqua", "index.docker.io", "ghcr.io"}

# The image's registry: Aqua scan (`registry`), trivy-operator report (`report.registry.server`).
allow_registry_found contains registry {
	registry := input.registry
}

allow_registry_found contains registry {
	registry := input.report.registry.server
}

allow {
	some registry in allow_registry_found
	registry in allow_registry_names
}
