# Several rendered `postee.vuls.html` messages merged into one (route `aggregate-message-*`).
# `input` is the array of rendered items: {title, description, url, ...}.
package postee.vuls.html.aggregation

import future.keywords

section_tpl := `<h1>%s</h1>
%s`

title := sprintf("Vulnerability scan report (%d images)", [count(input)])

result := concat("\n", [sprintf(section_tpl, [item.title, item.description]) | some item in input])

url := concat("\n", urls) {
	urls := [item.url | some item in input; is_string(item.url); item.url != ""]
	count(urls) > 0
}
