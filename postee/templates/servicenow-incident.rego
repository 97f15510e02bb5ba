# Aqua runtime incident as a ServiceNow incident (HTML work notes plus the incident fields).
package postee.servicenow.incident

import data.postee.clamp
import data.postee.with_default
import future.keywords

tpl := `
<p><b>Name:</b> %s</p>
<p><b>Category:</b> %s</p>
<p><b>Severity:</b> %v</p>
<p><b>Data:</b> %s</p>

<p><b>Resourse policy name:</b> %s</p>
<p><b>Resourse policy application scopes:</b> %v</p>
`

# Extra % is required in width:100%
table_tpl := `
<TABLE border='1' style='width: 100%%; border-collapse: collapse;'>
%s
</TABLE>
`

cell_tpl := `<TD style='padding: 5px;'>%s</TD>
`

row_tpl := `
<TR>
%s
</TR>`

render_table(content_array) = s {
	rows := [tr |
		cells := content_array[_]
		tds := [td | ctext := cells[_]; td := sprintf(cell_tpl, [ctext])]
		tr := sprintf(row_tpl, [concat("", tds)])
	]
	s := sprintf(table_tpl, [concat("", rows)])
}

# Aqua sends `data` as a JSON *string*. It is split as text (not parsed) so that the rows keep the
# order Aqua wrote them in: `{"host": "ubuntu","rule": "x",...}` -> ["host", " ubuntu"], ["rule", " x"].
data_rows = string_rows {
	is_string(input.data)
} else = object_rows {
	is_object(input.data)
} else = []

string_rows := [[key, value] |
	is_string(input.data)
	body := trim_suffix(trim_prefix(trim_space(input.data), "{"), "}")
	some item in split(body, ",\"")
	pair := replace(item, "\"", "")
	i := indexof(pair, ":")
	i >= 0
	key := substring(pair, 0, i)
	value := substring(pair, i + 1, -1)
]

object_rows := [[key, sprintf(" %v", [value])] |
	is_object(input.data)
	some key, value in input.data
]

data_table := "" {
	count(data_rows) == 0
} else := render_table(data_rows)

severity := with_default(input, "severity_score", 0)

title := input.name

result_category := "Security incident"

result_subcategory := with_default(input, "type", "")

# ServiceNow severity: 1 = high, 2 = medium, 3 = low.
result_severity := format_int(clamp(max([severity, 1]), 3), 10)

result_date := format_int(with_default(input, "create_time", 0), 10)

result_summary := sprintf("Category: %s\nSeverity: %v", [input.category, severity])

result_assigned_to := concat(";", with_default(input, "application_scope_owners", []))

result_assigned_group := concat(";", with_default(input, "application_scope", []))

result := sprintf(tpl, [
	input.name,
	input.category,
	severity,
	data_table,
	with_default(input, "response_policy_name", ""),
	with_default(input, "application_scope", []),
])
