# Route filter: take only events about images whose name matches one of these glob patterns.
# Use it from a route with `input-files: ["allow-image-name.rego"]` (copied into REGO_FILTERS_PATH and
# edited). Like every filter here it is `package postee` and defines `allow`; a route's files are
# OR-ed together, so an event passes when any of them allows it.
package postee

import future.keywords

# Edit me: `*` matches within a path segment, `**/` any number of leading segments
# (e.g. "**/nginx:*" matches "docker.io/library/nginx:1.25").
allow_image_name_patterns := ["alpine*", "**/nginx:*", "all-in-one:*"]

# The scanned image as each producer names it: Aqua scan, Trivy report, trivy-operator report.
allow_image_name_images contains image {
	image := input.image
}

allow_image_name_images contains image {
	image := input.ArtifactName
}

allow_image_name_images contains image {
	artifact := input.report.artifact
	image := sprintf("%s:%s", [artifact.repository, artifact.tag])
}

allow {
	some image in allow_image_name_images
	some pattern in allow_image_name_patterns
	glob.match(pattern, ["/"], image)
}
