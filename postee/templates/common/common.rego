# Helpers shared by Postee's templates (Postee's rego-templates/common/common.rego).
# Every template may `import data.postee.<helper>`; body/url templates are loaded with this file too.
package postee

# flat_array([[1, 2], [3]]) == [1, 2, 3]: one level of nesting removed.
flat_array(a) = o {
	o := [item | item := a[_][_]]
}

# with_default(obj, "prop", d): obj.prop, or d when obj has no such property (or it is false/null).
with_default(obj, prop, default_value) = default_value {
	not obj[prop]
}

with_default(obj, prop, default_value) = obj[prop] {
	obj[prop]
}

# by_flag(a, b, flag): a when flag is true, otherwise b.
by_flag(a, b, flag) = a {
	flag
}

by_flag(a, b, flag) = b {
	not flag
}

# duplicate(a, b, col): pick a for column 1 and b for column 2 (two-column Slack field lists).
duplicate(a, b, col) = a {
	col == 1
}

duplicate(a, b, col) = b {
	col == 2
}

# clamp(a, b): a, but at most b (Slack limits the number of blocks and fields).
clamp(a, b) = b {
	a > b
}

clamp(a, b) = a {
	a <= b
}
