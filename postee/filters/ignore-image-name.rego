# Route filter: take every scanned image *except* those whose name matches one of these glob patterns.
# (Filters are OR-ed, so combine an "ignore" filter only with filters that narrow further inside it.)
package postee

import future.keywords

# Edit me: `*` matches within a path segment, `**/` any number of leading segments.
ignore_image_name_patterns := ["test-*", "**/test-*", "*:dev", "**/*:dev"]

# The scanned image as each producer names it: Aqua scan, Trivy report, trivy-operator report.
ignore_image_name_images contains image {
	image := input.image
}

ignore_image_name_images contains image {
	image := input.ArtifactName
}

ignore_image_name_images contains image {
	artifact := input.report.artifact
	image := sprintf("%s:%s", [artifact.repository, artifact.tag])
}

ignore_image_name_matched {
	some image in ignore_image_name_images
	some pattern in ignore_image_name_patterns
	glob.match(pattern, ["/"], image)
}

allow {
	count(ignore_image_name_images) > 0
	not ignore_image_name_matched
}
